rule train:
    input:
        training_arrays,
    output:
        checkpoint=LAYOUT.model("checkpoint.pt"),
        log=LAYOUT.model("train_log.csv"),
    log:
        LAYOUT.log("train"),
    conda:
        ENV
    threads: threads_of("train")
    resources:
        **resources_of("train", per_volume=False),
    params:
        settings=settings("train"),
    shell:
        "unet-pipeline --on-busy wait train {output.checkpoint:q} {output.log:q}"
        " --settings {params.settings:q} --run {resources.run_settings:q} > {log:q} 2>&1"
