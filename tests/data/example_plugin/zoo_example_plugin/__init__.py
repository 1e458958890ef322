"""A third-party weightzoo plugin, as a package outside this repository would write one:
one operator (`example.scale`) and one command group (`zoo example`), declared through the
`weightzoo.plugins` entry point. The test suite installs it into a temporary path."""
