rule evaluate:
    input:
        unpack(read_only_with_settings("evaluate")),
        segmentation=of_volume("segmentation.ome.zarr"),
        probabilities=of_volume("probabilities.ome.zarr"),
        labels=of_volume("labels.ome.zarr"),
    output:
        metrics=of_volume("metrics.json"),
        sections=of_volume("metrics_sections.csv"),
    log:
        log_of("evaluate"),
    conda:
        ENV
    threads: threads_of("evaluate")
    resources:
        **resources_of("evaluate"),
    params:
        settings=settings("evaluate"),
    shell:
        "unet-pipeline --on-busy wait evaluate {input.segmentation:q} {input.probabilities:q} {input.labels:q}"
        " {output.metrics:q} --settings {params.settings:q} --run {resources.run_settings:q} > {log:q} 2>&1"
