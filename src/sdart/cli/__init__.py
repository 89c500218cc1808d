"""The command-line front end (`sdart …`): `app` in `sdart.cli.app`, one module per command, shared pieces in
`common` and `options`."""
