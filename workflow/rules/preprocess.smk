rule preprocess:
    input:
        of_volume("raw.ome.zarr"),
    output:
        of_volume("intensity.json"),
    log:
        log_of("preprocess"),
    conda:
        ENV
    resources:
        **resources_of("preprocess"),
    params:
        settings=settings("preprocess"),
    shell:
        "unet-pipeline --on-busy wait preprocess {input:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
