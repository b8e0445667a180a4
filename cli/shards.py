"""`sarsearch index --from-shards DIR`: the command's body (registered on `index` in cli/app.py)."""

from __future__ import annotations

from pathlib import Path

from sarclip_search.cli import render


def index_from_shards(folder: Path, db: Path | None, *, model: Path | None, index_factory: str | None,
                      memory_budget: int | None, rebuild: bool, ray: str | None, quiet: bool) -> None:
    """Build the index generation of `db` from the embedding shards in `folder` (ingest/from_shards.py) and,
    when the checkpoint that embedded them is at hand (--model, or the shipped one), its ONNX query encoders."""
    from sarclip_search.ingest.from_shards import build_from_shards, check_shard_model, export_shard_encoders
    from sarclip_search.model.checkpoints import DEFAULT_CHECKPOINT
    from sarclip_search.store.layout import IndexStore

    model_path = (model or DEFAULT_CHECKPOINT).resolve()
    same_model = check_shard_model(folder, model_path, explicit=model is not None)
    store = IndexStore(db)
    with render.progress_bar("building", quiet) as progress:
        report = build_from_shards(folder, store, index_factory=index_factory, memory_budget=memory_budget,
                                   rebuild=rebuild, ray=ray, progress=progress)
    if same_model:
        def load():
            from sarclip_search.model.sarclip import load_model

            return load_model(model_path)

        export_shard_encoders(store, model_path, load)
    seconds = report.seconds
    stages = ", ".join(f"{name} {seconds[name]:.1f} s" for name in ("train", "encode_wait", "catalog_and_add",
                                                                      "tune", "save") if name in seconds)
    for line in (
        (f"[bold green]built[/] {report.db} (generation {report.generation}) from {report.shards} shards in "
         f"{report.shards_dir}"),
        f"  {report.scenes} scenes, {report.tiles} tiles, index {report.index_factory}, codes: {report.encoder}",
        f"  {seconds['total']:.1f} s ({stages})",
    ):
        render.err_console.print(line, highlight=False, soft_wrap=True)
    for name in report.leftovers:
        render.warn(f"{report.shards_dir}/{name}: an unfinished shard write (a killed writer); not read")
    if not same_model:
        render.warn("no ONNX query encoders written (the checkpoint that embedded the shards was not given: "
                    "--model); queries will load the torch model from the path the shards record")
