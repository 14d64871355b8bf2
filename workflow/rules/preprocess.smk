rule preprocess:
    input:
        result("raw.ome.zarr"),
    output:
        directory(result("norm.ome.zarr")),
    log:
        log_file("preprocess"),
    conda:
        ENV
    resources:
        **resources_of("preprocess"),
    params:
        settings=settings("preprocess"),
    shell:
        "unet-pipeline --on-busy wait preprocess {input:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
