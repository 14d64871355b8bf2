rule segment:
    input:
        probabilities=result("probabilities.ome.zarr"),
        labels=result("labels.ome.zarr"),  # read when the merge threshold is tuned on labelled sections
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
