from agentstage.interfaces.cli.main import entry

entry()
