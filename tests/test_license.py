"""The LICENSE file matches what pyproject.toml declares, and the README says under which licences
the downloaded model files and the datasets come."""
from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO


def test_license_file_is_the_declared_apache_2():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert declared == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines[:3] == ["Apache License", "Version 2.0, January 2004", "http://www.apache.org/licenses/"]
    # the whole standard text: its nine sections, then the appendix
    for n, title in enumerate(["Definitions.", "Grant of Copyright License.", "Grant of Patent License.",
                               "Redistribution.", "Submission of Contributions.", "Trademarks.",
                               "Disclaimer of Warranty.", "Limitation of Liability.",
                               "Accepting Warranty or Additional Liability."], 1):
        assert re.search(rf"^\s*{n}\. {re.escape(title)}", text, re.M), title
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


def test_readme_licences_section_covers_code_weights_and_datasets():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Licences\n", 1)[1].split("\n## ", 1)[0]
    assert "[LICENSE](LICENSE)" in section and "Apache License 2.0" in section
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    want = {"SAM ViT-H": "Apache-2.0", "Grounding DINO": "Apache-2.0", "BERT": "Apache-2.0", "wide_resnet50_2": "Apache-2.0",
            "EfficientNet-Lite0": "Apache-2.0", "MVTec AD": "CC BY-NC-SA 4.0", "VisA": "CC BY 4.0",
            "KSDD2": "CC BY-NC-SA 4.0", "MTD": "citation"}
    for name, licence in want.items():
        row = [r for k, r in rows.items() if name in k]
        assert len(row) == 1, name
        assert licence in row[0], (name, row[0])
    assert "non-commercial" in rows[next(k for k in rows if "MVTec AD" in k)]
    assert "not checked" in rows[next(k for k in rows if "KSDD2" in k)]  # said where unsure
