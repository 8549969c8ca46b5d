"""The 30 classes of the paper and their groups, colour tables for Slicer and ITK-SNAP."""

import pytest

from thighct.errors import ThighctError
from thighct.labels import itksnap_label_description, read_labels, slicer_colour_table


@pytest.fixture(scope="module")
def labels(repo):
    return read_labels(repo / "config" / "labels.tsv")


def test_thirty_classes_27_muscles_two_bones(labels):
    assert labels.n_classes == 30
    assert len(labels.muscles) == 27
    assert labels.groups(include_bone=True)["bone"] == [
        labels.id_of("femur"),
        labels.id_of("iliac"),
    ]


def test_groups_as_in_the_paper(labels):
    g = {k: [labels.name_of(i) for i in v] for k, v in labels.groups().items()}
    assert g["anterior"] == [
        "sartorius",
        "rectus_femoris",
        "vastus_lateralis",
        "vastus_intermedius",
        "vastus_medialis",
    ]
    assert set(g["medial"]) == {
        "adductor_longus",
        "adductor_brevis",
        "adductor_magnus",
        "gracilis",
        "pectineus",
    }
    assert set(g["posterior"]) == {"semitendinosus", "semimembranosus", "biceps_femoris"}
    assert len(g["gluteal"]) == 8 and "tensor_fasciae_latae" in g["gluteal"]
    assert set(g["other"]) == {
        "iliacus",
        "iliopsoas",
        "psoas",
        "abdominal_oblique",
        "rectus_abdominis",
        "multifidus",
    }


def test_colour_tables_list_every_class(labels):
    slicer = slicer_colour_table(labels).splitlines()
    rows = [line for line in slicer if not line.startswith("#")]
    assert len(rows) == 30 and rows[1].split()[:2] == ["1", "sartorius"]
    itk = [
        line for line in itksnap_label_description(labels).splitlines() if not line.startswith("#")
    ]
    assert len(itk) == 30 and '"Sartorius"' in itk[1]


def test_bad_label_table_is_an_error(tmp_path):
    p = tmp_path / "labels.tsv"
    p.write_text(
        "id\tname\tdisplay\tgroup\tcolour\n0\tbackground\tB\tbackground\t#000000\n2\tx\tX\tother\t#ffffff\n"
    )
    with pytest.raises(ThighctError, match="contiguous"):
        read_labels(p)
