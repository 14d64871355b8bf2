rule evaluate:
    input:
        **read_only_with_settings("evaluate"),
        segmentation=result("segmentation.ome.zarr"),
        probabilities=result("probabilities.ome.zarr"),
        labels=result("labels.ome.zarr"),
    output:
        metrics=result("metrics.json"),
        sections=result("metrics_sections.csv"),
    log:
        log_file("evaluate"),
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
