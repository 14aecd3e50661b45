"""Local tooling around the service (never deployed): the `imgclassify` command, the emulator harness, and the
LiteRT build with its accuracy guard. The cloud code lives in common/; this package only calls it."""
