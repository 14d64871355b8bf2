rule segment:
    input:
        unpack(read_only_with_settings("segment")),
        probabilities=of_volume("probabilities.ome.zarr"),
    output:
        directory(of_volume("segmentation.ome.zarr")),
    log:
        log_of("segment"),
    conda:
        ENV
    threads: threads_of("segment")
    resources:
        **resources_of("segment"),
    params:
        settings=settings("segment"),
    shell:
        "unet-pipeline --on-busy wait segment {input.probabilities:q} {output:q} --settings {params.settings:q} --run {resources.run_settings:q} > {log:q} 2>&1"
