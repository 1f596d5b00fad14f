from alexnet_cli.cli import app

app(prog_name="alexnet")
