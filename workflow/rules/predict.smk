rule predict:
    input:
        image=result("norm.ome.zarr"),
        checkpoint=result("model/checkpoint.pt"),
    output:
        directory(result("probabilities.ome.zarr")),
    log:
        log_file("predict"),
    conda:
        ENV
    threads: threads_of("predict")
    resources:
        **resources_of("predict"),
    params:
        settings=settings("predict"),
    shell:
        "unet-pipeline --on-busy wait predict {input.image:q} {input.checkpoint:q} {output:q}"
        " --settings {params.settings:q} --run {resources.run_settings:q} > {log:q} 2>&1"
