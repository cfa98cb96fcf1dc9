"""`mesh bench`: the benchmarks on a local mesh, as tables."""
import click


@click.command()
@click.argument("parts", nargs=-1, type=click.Choice(["throughput", "latency", "scaling", "dashboard", "failover",
                                                                 "dataplane", "sklearn", "resident", "ceiling",
                                                                 "shmring"]))
@click.option("--rounds", type=int, default=3, show_default=True, help="Rounds per measurement (median, min-max).")
@click.option("--quick", is_flag=True, help="Smaller data and fewer rounds: a smoke run, not a result.")
def bench(parts, rounds, quick):
    """Run the benchmarks (default: throughput and latency) on a local mesh and print tables."""
    from ..bench.suite import run
    tables = run(parts or ("throughput", "latency"), rounds=rounds, quick=quick, log=click.echo)
    for name, text in tables.items():
        click.echo(f"\n{name}\n{text}")
