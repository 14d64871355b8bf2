rule evaluate:
    input:
        probabilities=result("probabilities.ome.zarr"),
        segmentation=result("segmentation.ome.zarr"),
        labels=result("labels.ome.zarr"),
        raw=result("raw.ome.zarr"),
    output:
        result("metrics.json"),
    params:
        settings=settings("evaluate"),
    log:
        log_file("evaluate"),
    conda:
        ENV
    shell:
        "unet-pipeline evaluate {input.probabilities:q} {input.segmentation:q} {input.labels:q} {input.raw:q}"
        " {output:q} --settings {params.settings:q} > {log:q} 2>&1"
