"""test_container.py builds and runs the image with podman (root, minutes): scripts/test-container.sh
(`make test-container`) runs it with SLUICE_CONTAINER_TEST=1; `make test` (pytest over tests/) does not."""
import os

collect_ignore = [] if os.environ.get("SLUICE_CONTAINER_TEST") == "1" else ["test_container.py"]
