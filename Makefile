# The README's two commands: `make demo` and `make test`. Every setup step is idempotent and
# skipped when already done; expensive things are cached under $(LLM_BUNDLE_CACHE).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export LLM_BUNDLE_CACHE ?= /var/cache/llm-bundle
export CONTAINERS_CONF ?= $(CURDIR)/tests/testhost/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PIP_CACHE_DIR ?= $(LLM_BUNDLE_CACHE)/pip
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(LLM_BUNDLE_CACHE)/tools/bin:$(PATH)
SCENARIOS ?= default fleet vllm driver trixie
STAMP = bash tests/stage.sh

.PHONY: help setup host-packages venv image ssh-key assets offline-bundle promtool lint unit docs collection sanity molecule test demo demo-destroy

help:
	@echo "make demo     deploy the stack onto a local systemd test host and print how to reach it"
	@echo "make test     lint + unit tests + collection build/use + ansible-test sanity + molecule scenarios ($(SCENARIOS))"
	@echo "make demo-destroy   remove the demo test host"
	@echo "make docs     regenerate the README variable tables from the argument specs"

host-packages:
	@$(STAMP) host-packages bash tests/testhost/install-host-packages.sh

venv:
	@$(STAMP) venv bash tests/testhost/make-venv.sh $(VENV)

image: host-packages
	@$(STAMP) image bash tests/testhost/build-image.sh bookworm
	@$(STAMP) image-trixie bash tests/testhost/build-image.sh trixie
	@bash tests/testhost/offline-network.sh create

ssh-key:
	@mkdir -p $(LLM_BUNDLE_CACHE)/ssh $(LLM_BUNDLE_CACHE)/uv-cache $(LLM_BUNDLE_CACHE)/uv-cache-offline && chmod 700 $(LLM_BUNDLE_CACHE)/ssh
	@test -s $(LLM_BUNDLE_CACHE)/ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -C llm-bundle-test -f $(LLM_BUNDLE_CACHE)/ssh/id_ed25519

assets:
	@$(STAMP) assets bash tests/assets/build.sh
	@$(STAMP) torch-cpu-wheel bash tests/assets/fetch-torch-cpu-wheel.sh

# molecule/default's host installs from this bundle alone (llm_offline): the demo inventory's, made like an operator's.
offline-bundle: venv assets
	@$(STAMP) offline-bundle ansible-playbook -i inventories/demo playbooks/offline-bundle.yml \
	  -e llm_offline_bundle_dir=$(LLM_BUNDLE_CACHE)/offline-bundle-molecule

promtool:
	@$(STAMP) promtool bash tests/testhost/fetch-promtool.sh

setup: host-packages venv image ssh-key assets promtool offline-bundle

lint: venv
	@$(STAMP) yamllint yamllint --strict .
	@$(STAMP) ansible-lint ansible-lint --profile production
	@$(STAMP) ruff ruff check .

unit: venv promtool
	@$(STAMP) unit pytest -q -n auto --durations=15 tests/unit

docs: venv
	@bash tests/docs/regenerate.sh

collection: venv
	@$(STAMP) collection bash tests/collection/run.sh

sanity: collection
	@$(STAMP) sanity bash tests/collection/sanity.sh

# Each scenario's output is also kept in .cache/logs/ (tests/molecule.sh); on a failure its failing checks and errors
# are printed again at the end, where a CI log's tail shows them.
molecule: setup
	@bash tests/molecule.sh $(SCENARIOS)

# Three lanes at once (tests/test-all.sh): molecule default; the static checks then fleet; the light scenarios
# (vllm, driver, trixie). Molecule often waits on the test hosts, leaving the CPUs idle.
test: setup
	@SCENARIOS="$(SCENARIOS)" bash tests/test-all.sh
	@echo "make test: all stages passed"

demo: setup
	@$(STAMP) demo ansible-playbook -i inventories/demo playbooks/demo.yml

demo-destroy: venv
	@ansible-playbook -i inventories/demo playbooks/demo-destroy.yml
