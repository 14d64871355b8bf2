rule segment:
    input:
        **read_only_with_settings("segment"),
        probabilities=result("probabilities.ome.zarr"),
    output:
        directory(result("segmentation.ome.zarr")),
    log:
        log_file("segment"),
    conda:
        ENV
    threads: threads_of("segment")
    resources:
        **resources_of("segment"),
    params:
        settings=settings("segment"),
    shell:
        "unet-pipeline --on-busy wait segment {input.probabilities:q} {output:q} --settings {params.settings:q} --run {resources.run_settings:q} > {log:q} 2>&1"
