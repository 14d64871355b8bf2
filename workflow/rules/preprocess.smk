rule preprocess:
    input:
        result("raw.ome.zarr"),
    output:
        directory(result("norm.ome.zarr")),
    params:
        settings=settings("preprocess"),
    resources:
        **resources_of("preprocess"),
    log:
        log_file("preprocess"),
    conda:
        ENV
    shell:
        "unet-pipeline --on-busy wait preprocess {input:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
