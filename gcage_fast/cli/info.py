"""``gcage-fast info``: what this machine offers gcage_fast (:func:`gcage_fast.info.system_info`)."""

from __future__ import annotations

import click

from gcage_fast.cli.common import command, emit_json, json_flag

__all__ = ["info"]


@command()
@json_flag("Print as JSON.")
def info(as_json: bool) -> None:
    """Show versions, available backends and ONNX Runtime providers, CPU features and GPU.

    \b
    Example:
      gcage-fast info --json
    """
    from gcage_fast.info import system_info

    data = system_info()
    if as_json:
        emit_json(data)
        return
    click.echo(f"gcage-fast {data['gcage_fast']} on Python {data['python']} ({data['platform']})")
    cpu = data["cpu"]
    click.echo(f"CPU: {cpu['model']}, {cpu['cores']} cores, features: {', '.join(cpu['features']) or 'none'}")
    gpu = data["gpu"]
    click.echo("GPU: " + (f"{gpu['name']} (compute {gpu['capability']}, {gpu['memory_gib']} GiB, CUDA {gpu['cuda']})"
                          if gpu else "none visible to torch"))
    click.echo(f"Backends: {', '.join(data['backends'])}; ONNX Runtime providers: "
               f"{', '.join(data['onnxruntime_providers']) or 'onnxruntime not installed'}")
    click.echo("Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items() if v))
    missing = [k for k, v in data["versions"].items() if not v]
    if missing:
        click.echo("Not installed: " + ", ".join(missing))
    click.echo(f"Export cache: {data['cache_dir']}")
