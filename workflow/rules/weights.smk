rule weights:
    input:
        result("labels.ome.zarr"),
    output:
        directory(result("weights.ome.zarr")),
    log:
        log_file("weights"),
    conda:
        ENV
    resources:
        **resources_of("weights"),
    params:
        settings=settings("weights"),
    shell:
        "unet-pipeline --on-busy wait weights {input:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
