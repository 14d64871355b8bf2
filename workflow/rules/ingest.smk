rule synth:
    output:
        raw=directory(result("synthetic/raw.ome.zarr")),
        labels=directory(result("synthetic/labels.ome.zarr")),
    log:
        log_file("synth"),
    conda:
        ENV
    resources:
        **resources_of("ingest"),
    params:
        folder=lambda wildcards, output: os.path.dirname(output.raw),
        shape=",".join(map(str, config["data"]["synthetic"]["shape"])),
        seed=config["data"]["synthetic"]["seed"],
        chunks=",".join(map(str, config["storage"]["chunks"])),
        voxel_size=",".join(map(str, config["data"]["synthetic"]["voxel_size"])),
        compression=json.dumps(config["storage"]["compression"], sort_keys=True),
    shell:
        "unet-pipeline --on-busy wait synth {params.folder:q} --shape {params.shape} --seed {params.seed}"
        " --chunks {params.chunks} --voxel-size {params.voxel_size} --compression {params.compression:q}"
        " > {log:q} 2>&1"


rule ingest:
    input:
        lambda wildcards: source_on_disk(wildcards.kind),
    output:
        directory(result("{kind}.ome.zarr")),
    log:
        log_file("ingest_{kind}"),
    wildcard_constraints:
        kind="raw|labels",
    conda:
        ENV
    resources:
        **resources_of("ingest"),
    params:
        source=lambda wildcards: source(wildcards.kind),
        settings=settings("ingest"),
    shell:
        "unet-pipeline --on-busy wait ingest {wildcards.kind} {params.source:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
