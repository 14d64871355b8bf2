rule export:
    input:
        checkpoint=LAYOUT.model("checkpoint.pt"),
        sample=lambda wildcards: export_settings(config)["sample"],
    output:
        LAYOUT.model("bioimageio.zip"),
    log:
        LAYOUT.log("export"),
    conda:
        ENV
    resources:
        **resources_of("report", per_volume=False),  # a small CPU job, as the report's
    params:
        settings=lambda wildcards: json.dumps(export_settings(config), sort_keys=True),
    shell:
        "unet-pipeline --on-busy wait export {input.checkpoint:q} {output:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"
