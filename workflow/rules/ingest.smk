rule synth:
    output:
        raw=directory(of_volume("synthetic/raw.ome.zarr")),
        labels=directory(of_volume("synthetic/labels.ome.zarr")),
    log:
        log_of("synth"),
    conda:
        ENV
    resources:
        **resources_of("ingest"),
    params:
        folder=lambda wildcards, output: os.path.dirname(output.raw),
        shape=lambda wildcards: ",".join(map(str, VOLUMES[wildcards.volume]["synthetic"]["shape"])),
        seed=lambda wildcards: VOLUMES[wildcards.volume]["synthetic"]["seed"],
        chunks=",".join(map(str, config["storage"]["chunks"])),
        voxel_size=lambda wildcards: ",".join(map(str, VOLUMES[wildcards.volume]["synthetic"]["voxel_size"])),
        compression=json.dumps(config["storage"]["compression"], sort_keys=True),
    shell:
        "unet-pipeline --on-busy wait synth {params.folder:q} --shape {params.shape} --seed {params.seed}"
        " --chunks {params.chunks} --voxel-size {params.voxel_size} --compression {params.compression:q}"
        " > {log:q} 2>&1"


rule ingest:
    input:
        sources_on_disk,
    output:
        directory(of_volume("{kind}.ome.zarr")),
    log:
        log_of("ingest_{kind}"),
    wildcard_constraints:
        kind="raw|labels|mask",
    conda:
        ENV
    resources:
        **resources_of("ingest"),
    params:
        source=lambda wildcards: source(wildcards.volume, wildcards.kind),
        source_state=folder_source_state,
        settings=ingest_settings_of_kind,
    shell:
        "unet-pipeline --on-busy wait ingest {wildcards.kind} {params.source:q} {output:q} --settings {params.settings:q} > {log:q} 2>&1"
