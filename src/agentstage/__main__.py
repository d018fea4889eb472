from agentstage.interfaces.cli.main import run

run()
