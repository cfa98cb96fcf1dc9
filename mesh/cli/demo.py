"""`mesh demo`: the original's experiments on a local mesh."""
import click


@click.command()
@click.argument("names", nargs=-1)
@click.option("--workers", type=int, default=2, show_default=True, help="Local workers to start.")
@click.option("--quick", is_flag=True, help="A reduced run (as in the tests).")
@click.option("--data", type=click.Path(), default=None, help="Data file for demos that read one.")
def demo(names, workers, quick, data):
    """Run the original's experiments on a local mesh (simple, random, ... or all)."""
    from ..demos import DEMOS, run
    from ..localmesh import LocalMesh
    names = list(names) or ["simple"]
    if names == ["all"]:
        names = list(DEMOS)
    unknown = [n for n in names if n not in DEMOS]
    if unknown:
        raise click.UsageError(f"unknown demo {unknown[0]!r}; choose from {', '.join(DEMOS)} or all")
    rows = []
    with LocalMesh(workers) as client:
        for name in names:
            click.echo(f"{name}:")
            rows.append(run(name, client, quick=quick, data=data, log=click.echo))
    click.echo(f"\n{'demo':<8} {'result':<28} {'original':<36} {'time':>7}")
    for r in rows:
        click.echo(f"{r['demo']:<8} {r['result']:<28} {r['original']:<36} {r['seconds']:>6.1f}s")
