rule weights:
    input:
        result("labels.ome.zarr"),
    output:
        directory(result("weights.ome.zarr")),
    params:
        settings=settings("weights"),
    resources:
        **resources_of("weights"),
    log:
        log_file("weights"),
    conda:
        ENV
    shell:
        "unet-pipeline --on-busy wait weights {input:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
