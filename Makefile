# Two entry points: `make demo` and `make test`. Each creates or reuses .venv and installs what it needs.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# glibc otherwise unmaps and remaps the 3D-volume buffers every step (measured: 2.24 s -> 1.68 s a step)
export MALLOC_MMAP_THRESHOLD_ := 1073741824
export MALLOC_TRIM_THRESHOLD_ := 1073741824

.PHONY: demo test install bench soak clean

$(VPY):
	$(PY) -m venv $(VENV)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 (CPU) lies on disk here
$(STAMP): $(VPY) setup.py
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "torch==2.13.0"
	$(VPY) -m pip install -q -e '.[ros,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VPY) -m ges_ros.demo --out demo_out

test: $(STAMP)
	$(VPY) -m pytest -q -ra -p no:cacheprovider

bench: $(STAMP)
	$(VPY) -m ges_ros.cli bench all

# the long soak: 2000 pairs through the node (test marked slow) and its table in docs/RELIABILITY.md
soak: $(STAMP)
	$(VPY) -m pytest test -q -m slow -p no:cacheprovider
	$(VPY) -m ges_ros.cli bench soak --pairs 2000 --rate 30 --node-size 480x640

clean:
	rm -rf $(VENV) build install log demo_out *.egg-info
