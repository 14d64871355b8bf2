rule evaluate:
    input:
        segmentation=result("segmentation.ome.zarr"),
        probabilities=result("probabilities.ome.zarr"),
        labels=result("labels.ome.zarr"),
        raw=result("raw.ome.zarr"),
    output:
        metrics=result("metrics.json"),
        sections=result("metrics_sections.csv"),
    params:
        settings=settings("evaluate"),
    resources:
        **resources_of("evaluate"),
    log:
        log_file("evaluate"),
    conda:
        ENV
    shell:
        "unet-pipeline --on-busy wait evaluate {input.segmentation:q} {input.probabilities:q} {input.labels:q}"
        " {output.metrics:q} --settings {params.settings:q} --run {resources.run_settings:q} > {log:q} 2>&1"
