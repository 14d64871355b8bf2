rule predict:
    input:
        unpack(read_only_with_settings("predict")),
        image=of_volume("raw.ome.zarr"),
        intensity=of_volume("intensity.json"),
        checkpoint=model_checkpoint(config),
    output:
        directory(of_volume("probabilities.ome.zarr")),
    log:
        log_of("predict"),
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
