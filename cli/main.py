"""Entry point of the ``eoskeras`` command."""
import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="eoskeras")
def main() -> None:
    """eoskeras: train above the stability threshold and measure the landscape."""
