"""The `coin` command line: one module per command group, each parsing its options, calling the
library and printing. Every user mistake ends as one line on stderr and a non-zero exit status.

Commands are imported when they run, so `coin info` and `coin codecs` start without torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import CoinError
from ..malloc import tune

# command name -> module (in this package) that defines it under that name
COMMANDS = {"encode": "encode", "decode": "decode", "info": "inspect", "codecs": "inspect", "demo": "demo",
            "bench": "bench", "train": "train", "postfilter": "train"}
FUNCTIONS = {"codecs": "list_codecs"}  # where the function's name is not the command's


class CoinGroup(click.Group):
    """Loads each command from its module on first use, and turns every CoinError into one line on
    stderr and its exit status (never a traceback)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"{__name__}.{COMMANDS[name]}")
        return getattr(module, FUNCTIONS.get(name, name))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CoinError as e:
            click.echo(f"coin: error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=CoinGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="coinpp", prog_name="coin")
def cli() -> None:
    """coin: a neural codec that stores images, audio, MRI volumes (NIfTI) and climate fields (NetCDF)
    as latent vectors of a meta-learned network (COIN++), decodable at any resolution."""


def main() -> None:
    # Not for `coin postfilter`: under the tuned heap its training grew by about 100 MB a second on
    # plain glibc (23 GB in minutes, then the OOM killer), and at glibc's defaults it stays flat.
    if sys.argv[1:2] != ["postfilter"]:
        tune()
    cli(prog_name="coin")
