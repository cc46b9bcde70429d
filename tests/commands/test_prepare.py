"""``saa prepare visa`` and ``saa prepare check`` (saa.commands.prepare) from the command line."""
from __future__ import annotations

from tests.conftest import PCB


def test_prepare_commands(tmp_path, capsys, put_image, put_mask):
    from saa.cli import main

    raw = tmp_path / "raw"
    img = raw / "pcb1" / "Data" / "Images"
    put_image(PCB / "pcb1" / "defective.jpg", img / "Anomaly" / "000.JPG")
    put_image(PCB / "pcb1" / "defective.jpg", img / "Normal" / "0000.JPG")
    put_image(PCB / "pcb1" / "defective.jpg", img / "Normal" / "0001.JPG")
    put_mask(PCB / "pcb1" / "ground_truth.jpg", raw / "pcb1" / "Data" / "Masks" / "Anomaly" / "000.png")
    (raw / "split_csv").mkdir()
    (raw / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\n"
        "pcb1,train,normal,pcb1/Data/Images/Normal/0001.JPG,\n"
        "pcb1,test,normal,pcb1/Data/Images/Normal/0000.JPG,\n"
        "pcb1,test,anomaly,pcb1/Data/Images/Anomaly/000.JPG,pcb1/Data/Masks/Anomaly/000.png\n")
    out = tmp_path / "1cls"
    assert main(["prepare", "visa", "--raw", str(raw), "--out", str(out)]) == 0
    assert "1 test/bad" in capsys.readouterr().out
    assert (out / "pcb1" / "ground_truth" / "bad" / "000.png").is_file()
    assert main(["prepare", "check", "visa_public", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pcb1: 2 images (1 normal, 1 anomalous), 1 masks" in text
    assert main(["prepare", "check", "ksdd2", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
