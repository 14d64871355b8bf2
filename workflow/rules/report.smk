rule report:
    input:
        report_files,
    output:
        result("report.html"),
    log:
        LAYOUT.log("report"),
    conda:
        ENV
    resources:
        **resources_of("report", per_volume=False),
    params:
        settings=settings("report"),
    shell:
        "unet-pipeline --on-busy wait report {output:q} --settings {params.settings:q} > {log:q} 2>&1"
