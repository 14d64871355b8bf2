rule report:
    input:
        raw=result("raw.ome.zarr"),
        probabilities=result("probabilities.ome.zarr"),
        segmentation=result("segmentation.ome.zarr"),
        labels=result("labels.ome.zarr"),
        weights=result("weights.ome.zarr"),
        metrics=result("metrics.json"),
        sections=result("metrics_sections.csv"),
        train_log=result("model/train_log.csv"),
    output:
        result("report.html"),
    log:
        log_file("report"),
    conda:
        ENV
    resources:
        **resources_of("report"),
    params:
        settings=settings("report"),
    shell:
        "unet-pipeline --on-busy wait report {input.raw:q} {input.probabilities:q} {input.segmentation:q} {input.labels:q}"
        " {input.weights:q} {input.metrics:q} {input.train_log:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
