"""``gcage-fast verify`` and ``gcage-fast report``: check a scan's output, and show it as one HTML page."""

from __future__ import annotations

import sys

import click

from gcage_fast.cli.common import (command, emit_json, json_flag, output_file, output_option, require_output,
                                   setup_logging)

__all__ = ["verify", "report"]


@command()
@click.argument("output", type=click.Path(path_type=str))
@json_flag("Print the report as JSON.")
def verify(output: str, as_json: bool) -> None:
    """Check a scan's output: one row per planned input, every part readable and matching its commit marker.

    Exits 0 when the output is complete and consistent, 1 otherwise.

    \b
    Example:
      gcage-fast verify results/
    """
    from gcage_fast.output.verify import verify_output

    result = verify_output(output)
    if as_json:
        emit_json(result.to_dict())
    else:
        status = ", ".join(f"{k} {v}" for k, v in sorted(result.status.items())) or "none"
        click.echo(f"{'OK' if result.ok else 'FAILED'}: {output}: {result.n_rows}/{result.n_planned} rows, "
                   f"{result.n_committed}/{result.n_shards} shards committed; status: {status}")
        for p in result.problems:
            click.echo(f"  - {p}")
    if not result.ok:
        sys.exit(1)


@command()
@click.argument("scan_output", metavar="OUTPUT", type=click.Path(exists=True, file_okay=False, path_type=str))
@output_option("HTML file to write (missing parent directories are created).", aliases=("--html",),
               type=click.Path(dir_okay=False, path_type=str))
@click.option("--top", "top_n", type=click.IntRange(min=0, max=1000), default=50, show_default=True,
              help="How many of the most suspicious images to show with thumbnails.")
@click.option("--no-sources", is_flag=True,
              help="Never open the scanned files for thumbnails (only the scan's heatmaps and stored CAMs).")
def report(scan_output: str, output: str | None, top_n: int, no_sources: bool) -> None:
    """Write a self-contained HTML report of the scan output OUTPUT.

    One file, no scripts and no network: run summary (counts by status, verdict and error code, throughput,
    model, backend), histograms of p_fake and base_p_fake, attribution counts, the most suspicious images with
    their heatmap overlays, the errors, and the DuckDB query behind each number. Thumbnails come from the scan's
    heatmaps (scan --heatmaps png), else from the source files when still readable and unchanged (decoded in a
    sandboxed worker), else from the stored 7x7 CAMs.

    \b
    Example:
      gcage-fast scan photos/ -o results/ --heatmaps png
      gcage-fast report results/ -o results/report.html
    """
    from gcage_fast.report import write_report

    html_path = require_output(output)
    setup_logging(True)
    output_file(html_path, "report")
    result = write_report(scan_output, html_path, top_n, read_sources=not no_sources)
    click.echo(f"{result.path}: {result.rows} rows, {result.thumbnails} thumbnails, "
               f"{result.bytes / 2**20:.1f} MiB in {result.seconds:.1f} s")
