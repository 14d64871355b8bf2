rule segment:
    input:
        result("probabilities.ome.zarr"),
    output:
        directory(result("segmentation.ome.zarr")),
    params:
        settings=settings("segment"),
    resources:
        **resources_of("segment"),
    log:
        log_file("segment"),
    conda:
        ENV
    shell:
        "unet-pipeline --on-busy wait segment {input:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
