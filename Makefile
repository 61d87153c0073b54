# One command to run the gateway, one to run the whole suite (see README.md).
.PHONY: setup serve test

setup:
	bash scripts/setup.sh

serve: setup
	HF_HUB_OFFLINE=1 .venv/bin/taskgate serve $(ARGS)

test:
	bash scripts/test.sh
