from alexnet_cli.cli import main

main()
