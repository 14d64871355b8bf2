rule train:
    input:
        norm=result("norm.ome.zarr"),
        labels=result("labels.ome.zarr"),
        weights=result("weights.ome.zarr"),
    output:
        checkpoint=result("model/checkpoint.pt"),
        log=result("model/train_log.csv"),
    log:
        log_file("train"),
    conda:
        ENV
    threads: threads_of("train")
    resources:
        **resources_of("train"),
    params:
        settings=settings("train"),
    shell:
        "unet-pipeline --on-busy wait train {input.norm:q} {input.labels:q} {input.weights:q} {output.checkpoint:q}"
        " {output.log:q} --settings {params.settings:q} --run {resources.run_settings:q} > {log:q} 2>&1"
