rule weights:
    input:
        of_volume("labels.ome.zarr"),
    output:
        directory(of_volume("weights.ome.zarr")),
    log:
        log_of("weights"),
    conda:
        ENV
    resources:
        **resources_of("weights"),
    params:
        settings=settings("weights"),
    shell:
        "unet-pipeline --on-busy wait weights {input:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
