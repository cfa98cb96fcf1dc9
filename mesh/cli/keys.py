"""`mesh keys`: CurveZMQ keys folders (security.py)."""
import click


@click.group()
def keys():
    """CurveZMQ keys: generate, allow, revoke."""


@keys.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", "names", multiple=True, help="Pair names (default: broker, worker, client).")
def keys_generate(directory, names):
    """Write key pairs (owner-only files) and allow-lists that admit them into DIRECTORY."""
    from ..security import generate
    for name in generate(directory, names or ("broker", "worker", "client")):
        click.echo(f"{directory}/{name}.key (public), {directory}/{name}.key_secret (secret)")


@keys.command("allow")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("public_key", type=click.Path(dir_okay=False, exists=True))
@click.option("--kind", type=click.Choice(["mesh", "clients"]), default="clients", show_default=True,
              help="mesh: a broker or worker; clients: may use the broker.")
def keys_allow(directory, public_key, kind):
    """Admit PUBLIC_KEY (a .key file) to the mesh."""
    from ..security import KeyError_, allow
    try:
        click.echo(f"allowed {allow(directory, public_key, kind)}")
    except (KeyError_, ValueError, OSError) as e:
        raise click.ClickException(f"{public_key} is not a public key file: {e}") from None


@keys.command("revoke")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("name")
def keys_revoke(directory, name):
    """Stop admitting the key NAME (e.g. client-old); restart processes to drop live sessions."""
    from ..security import revoke
    removed = revoke(directory, name)
    if not removed:
        raise click.ClickException(f"no allowed key named {name!r} in {directory}")
    for p in removed:
        click.echo(f"revoked {p}")
