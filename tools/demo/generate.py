"""Deterministic generator of the Greater Manchester demo DICOM dataset.

The facade federates queries over eight trust archives, so the demo needs data that
looks like theirs: patients seen at several trusts, two styles of patient identity
(NHS number as PatientID, or a local MRN with the NHS number only in
OtherPatientIDsSequence plus a cross-reference file), every imaging specialty, and the
data-quality problems real archives have (bad dates, partial times, multi-valued
fields, non-ASCII names in two character sets, a study held by two trusts).

Everything is derived from one seed: the same seed gives byte-identical files, UIDs
(``2.25.<uuid>`` built from a hash of seed + a stable key) and manifest.

Layout written under ``out_dir``::

    <trust-id>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    xref.csv        nhs_number,trust,local_patient_id,issuer (xref-style trusts only)
    manifest.json   patients, studies and the "facts" naming each special case

Images look like what they are (tools/demo/pixels.py: an analytic human phantom sampled
as CT in Hounsfield units, MR, PET, radiographs and scintigrams; procedural colour images;
10 s 12-lead ECGs). The studies named in ``facts.full_size_studies`` (the multi-trust
patient's and each modality's example study) have the sizes a viewer expects (CT 512x512
stacks of 10 slices, MR 256x256, radiographs 1024+ on the short side, colour images
1024x768, ultrasound 640x480 RGB, a 32-frame NM flow phase, a 3-level whole-slide
pyramid); the others have the same content at a smaller matrix and the catalogue's few
instances, which keeps the dataset near 175 MB. ``GENERATOR_VERSION`` names what is
written; the manifest records it.

Usage: ``python -m tools.demo.generate OUT_DIR [--seed N]`` (progress on stderr).

Deliberate shortcuts (it is demo data, not a conformance suite): non-image objects carry
only what makes them plausible (not every Type 1 attribute of their IOD), and so do the
images (no enhanced multi-frame functional groups for OCT, a simplified NM module); the
haemodynamic pressure channel is coded in a local scheme (99GMDEMO), not CID 3003;
procedure codes are standard (SNOMED CT, LOINC) only where the code is known for certain.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import random
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

from pydicom import config
from pydicom import uid as dicom_uid
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info

from app.core.identity import nhs_check_digit
from tools.demo import pixels
from tools.demo.reports import pdf_report_lines, pdf_report_title, tid2000_content

DEFAULT_SEED = 20261127
# Bumped whenever the generator writes different data for the same seed: `python -m app demo`
# regenerates a demo-data/ folder of another version, and the tests key their cached copy by it.
GENERATOR_VERSION = 4
NHS_NUMBER_OID = "2.16.840.1.113883.2.1.4.1"
MANIFEST_NAME = "manifest.json"
XREF_NAME = "xref.csv"
XREF_HEADER = ("nhs_number", "trust", "local_patient_id", "issuer")

# Fixed implementation identity in the file meta, so that files do not change when
# pydicom is upgraded (pydicom would otherwise stamp its own version into every file).
_IMPLEMENTATION_CLASS_UID = "2.25.179368216911744437405431405315470226411"
_IMPLEMENTATION_VERSION = "GMFHIRDEMO_1"


# --------------------------------------------------------------------------- trusts


@dataclass(frozen=True)
class Trust:
    """One trust archive: id used in paths/config, ODS code, name, identity style."""

    id: str
    ods_code: str
    name: str
    identity: str  # "nhs": PatientID is the NHS number; "xref": local MRN + xref.csv


TRUSTS: tuple[Trust, ...] = (
    Trust("bolton", "RMC", "Bolton NHS Foundation Trust", "nhs"),
    Trust("christie", "RBV", "The Christie NHS Foundation Trust", "xref"),
    Trust("mft", "R0A", "Manchester University NHS Foundation Trust", "nhs"),
    Trust("stockport", "RWJ", "Stockport NHS Foundation Trust", "xref"),
    Trust("wwl", "RRF", "Wrightington, Wigan and Leigh NHS Foundation Trust", "nhs"),
    Trust("tameside", "RMP", "Tameside and Glossop Integrated Care NHS Foundation Trust", "xref"),
    Trust("salford", "RM3", "Northern Care Alliance NHS Foundation Trust (Salford Royal)", "nhs"),
    Trust("pennine", "RW6", "Northern Care Alliance NHS Foundation Trust (Pennine Acute)", "nhs"),
)
TRUSTS_BY_ID: dict[str, Trust] = {t.id: t for t in TRUSTS}

# Storage SOP Class per series modality (one class per modality in this dataset).
SOP_CLASS_BY_MODALITY: dict[str, str] = {
    "CT": dicom_uid.CTImageStorage,
    "MR": dicom_uid.MRImageStorage,
    "CR": dicom_uid.ComputedRadiographyImageStorage,
    "DX": dicom_uid.DigitalXRayImageStorageForPresentation,
    "MG": dicom_uid.DigitalMammographyXRayImageStorageForPresentation,
    "NM": dicom_uid.NuclearMedicineImageStorage,
    "PT": dicom_uid.PositronEmissionTomographyImageStorage,
    "US": dicom_uid.UltrasoundImageStorage,
    "XA": dicom_uid.XRayAngiographicImageStorage,
    "RF": dicom_uid.XRayRadiofluoroscopicImageStorage,
    "ES": dicom_uid.VLEndoscopicImageStorage,
    "XC": dicom_uid.VLPhotographicImageStorage,
    "GM": dicom_uid.VLMicroscopicImageStorage,
    "SM": dicom_uid.VLWholeSlideMicroscopyImageStorage,
    "OP": dicom_uid.OphthalmicPhotography8BitImageStorage,
    "OPT": dicom_uid.OphthalmicTomographyImageStorage,
    "ECG": dicom_uid.TwelveLeadECGWaveformStorage,
    "HD": dicom_uid.HemodynamicWaveformStorage,
    "SR": dicom_uid.ComprehensiveSRStorage,
    "DOC": dicom_uid.EncapsulatedPDFStorage,
    "KO": dicom_uid.KeyObjectSelectionDocumentStorage,
    "PR": dicom_uid.GrayscaleSoftcopyPresentationStateStorage,
    "SEG": dicom_uid.SegmentationStorage,
}
SPECIALTY_MODALITIES: tuple[str, ...] = tuple(SOP_CLASS_BY_MODALITY)
_NON_IMAGE = frozenset({"ECG", "HD", "SR", "DOC", "KO", "PR", "SEG"})


@dataclass(frozen=True)
class _Site:
    institution: str
    address: str


_SITES: dict[str, _Site] = {
    "bolton": _Site("Royal Bolton Hospital", "Minerva Road, Farnworth, Bolton, BL4 0JR"),
    "christie": _Site("The Christie", "Wilmslow Road, Withington, Manchester, M20 4BX"),
    "mft": _Site("Manchester Royal Infirmary", "Oxford Road, Manchester, M13 9WL"),
    "stockport": _Site("Stepping Hill Hospital", "Poplar Grove, Hazel Grove, Stockport, SK2 7JE"),
    "wwl": _Site("Royal Albert Edward Infirmary", "Wigan Lane, Wigan, WN1 2NN"),
    "tameside": _Site("Tameside General Hospital", "Fountain Street, Ashton-under-Lyne, OL6 9RW"),
    "salford": _Site("Salford Royal Hospital", "Stott Lane, Salford, M6 8HD"),
    "pennine": _Site("The Royal Oldham Hospital", "Rochdale Road, Oldham, OL1 2JH"),
}
# Specialist work happens at a different hospital of the same trust.
_SITE_OVERRIDES: dict[tuple[str, str], _Site] = {
    ("mft", "Ophthalmology"): _Site("Manchester Royal Eye Hospital", "Oxford Road, Manchester, M13 9WL"),
    ("mft", "Cardiology"): _Site("Wythenshawe Hospital", "Southmoor Road, Wythenshawe, Manchester, M23 9LT"),
    ("wwl", "Orthopaedic Imaging"): _Site("Wrightington Hospital", "Hall Lane, Appley Bridge, Wigan, WN6 9EP"),
    ("pennine", "Endoscopy Unit"): _Site("Fairfield General Hospital", "Rochdale Old Road, Bury, BL9 7TD"),
}


@dataclass(frozen=True)
class _Profile:
    """How a trust's PACS writes things: these differences are what the facade absorbs."""

    charset: str | None  # None: element absent (default repertoire, ASCII only)
    upper_names: bool  # legacy RIS feeds that upper-case ASCII patient names
    manufacturer: str
    accession_digits: int
    timezone: bool  # writes TimezoneOffsetFromUTC
    local_coding: bool  # ProcedureCodeSequence always in the trust's 99<ODS> scheme
    fractional_time: bool


_PROFILES: dict[str, _Profile] = {
    "bolton": _Profile("ISO_IR 100", True, "SIEMENS", 8, False, False, False),
    "christie": _Profile("ISO_IR 192", False, "Philips", 7, True, False, True),
    "mft": _Profile("ISO_IR 192", False, "GE MEDICAL SYSTEMS", 9, True, False, False),
    "stockport": _Profile("ISO_IR 100", False, "Canon Medical Systems", 7, False, True, False),
    "wwl": _Profile("ISO_IR 100", False, "SIEMENS", 8, False, False, True),
    "tameside": _Profile(None, False, "FUJIFILM Corporation", 6, False, True, False),
    "salford": _Profile("ISO_IR 192", False, "Philips", 8, True, False, False),
    "pennine": _Profile("ISO_IR 100", True, "GE MEDICAL SYSTEMS", 8, False, True, False),
}

# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class _SeriesSpec:
    modality: str
    description: str
    count: int = 1
    side: str | None = None  # "study": the study's side; "L"/"R"/"B": fixed
    views: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Template:
    key: str
    description: str  # "{side}" is replaced by Left/Right for sided studies
    department: str
    series: tuple[_SeriesSpec, ...]
    reasons: tuple[str, ...]
    local_code: str
    body_parts: tuple[str, ...] = ()  # PS3.16 Annex L terms; empty for waveforms
    code: tuple[str, str, str] | None = None  # standard (scheme, value, meaning)
    trusts: tuple[str, ...] = tuple(t.id for t in TRUSTS)
    sided: bool = False
    sex: str | None = None
    ages: tuple[int, int] = (18, 110)
    weight: int = 1
    manufacturer: str | None = None

    def modalities(self) -> set[str]:
        return {s.modality for s in self.series}


_ACUTE = tuple(t.id for t in TRUSTS if t.id != "christie")
_S = _SeriesSpec

# Standard codes are only those we are sure of (SNOMED CT procedures, LOINC radiology
# playbook); everything else is coded in the trust's local "99<ODS>" scheme, as UK
# trusts do with NICIP-style codes.
_TEMPLATES: tuple[_Template, ...] = (
    _Template(
        "ct_cap",
        "CT Chest Abdomen Pelvis with contrast",
        "Radiology",
        (_S("CT", "Topogram", 1), _S("CT", "Axial 5mm portal venous", 3), _S("CT", "Coronal 3mm", 1)),
        (
            "Staging colorectal carcinoma",
            "Unexplained weight loss ? malignancy",
            "Follow-up lymphoma post chemotherapy",
            "Raised CA-125",
        ),
        "CCAPC",
        ("CHESTABDPELVIS",),
        weight=3,
    ),
    _Template(
        "ct_head",
        "CT Head without contrast",
        "Radiology",
        (_S("CT", "Head axial 5mm", 2), _S("CT", "Head bone window", 1)),
        ("Fall on anticoagulants", "Sudden onset headache", "Acute confusion", "Suspected stroke"),
        "CHEAD",
        ("HEAD",),
        ("LN", "24725-4", "CT Head"),
        _ACUTE,
        weight=3,
    ),
    _Template(
        "ct_chest",
        "CT Chest",
        "Radiology",
        (_S("CT", "Axial lung 1mm", 2), _S("CT", "Axial mediastinum 3mm", 1)),
        ("Lung nodule surveillance", "Haemoptysis", "Interstitial lung disease"),
        "CCHES",
        ("CHEST",),
        ("LN", "24627-2", "CT Chest"),
        weight=2,
    ),
    _Template(
        "mr_knee",
        "MRI Knee {side}",
        "Radiology",
        (
            _S("MR", "PD FS sagittal", 2, "study"),
            _S("MR", "T1 coronal", 1, "study"),
            _S("MR", "PD FS axial", 1, "study"),
            _S("KO", "Key images"),
        ),
        ("Locking and giving way ? meniscal tear", "Sports injury ? ACL rupture", "Persistent knee pain"),
        "MKNEE",
        ("KNEE",),
        None,
        _ACUTE,
        sided=True,
        weight=2,
    ),
    _Template(
        "mr_brain",
        "MRI Head",
        "Radiology",
        (_S("MR", "T2 axial", 2), _S("MR", "FLAIR axial", 1), _S("MR", "DWI", 1)),
        ("Multiple sclerosis follow-up", "Headache with red flags", "Seizure ? structural cause"),
        "MHEAD",
        ("HEAD",),
        weight=2,
    ),
    _Template(
        "mr_lspine",
        "MRI Lumbar Spine",
        "Radiology",
        (_S("MR", "T2 sagittal", 2), _S("MR", "T1 sagittal", 1), _S("MR", "T2 axial", 1)),
        ("Sciatica ? disc prolapse", "Back pain with red flags", "Cauda equina symptoms"),
        "MSPIL",
        ("LSPINE",),
        None,
        _ACUTE,
        weight=2,
    ),
    _Template(
        "mr_prostate",
        "MRI Prostate multiparametric",
        "Radiology",
        (_S("MR", "T2 axial", 1), _S("MR", "DWI b1400", 1), _S("MR", "DCE", 1)),
        ("Raised PSA",),
        "MPROS",
        ("PROSTATE",),
        None,
        ("mft", "salford", "stockport", "christie", "bolton"),
        sex="M",
        ages=(45, 90),
    ),
    _Template(
        "cr_chest",
        "XR Chest PA",
        "Radiology",
        (_S("CR", "PA", 1, views=("PA",)),),
        ("Cough more than 3 weeks", "Pre-operative assessment", "Shortness of breath", "Suspected pneumonia"),
        "XCHES",
        ("CHEST",),
        weight=4,
    ),
    _Template(
        "dx_hip",
        "XR Hip {side}",
        "Orthopaedic Imaging",
        (
            _S("DX", "AP pelvis and lateral hip", 2, "study", ("AP", "LL")),
            _S("PR", "Orthopaedic templating"),
            _S("DOC", "Orthopaedic clinic report"),
        ),
        ("Hip pain ? osteoarthritis", "Post-operative total hip replacement check", "Fall ? neck of femur fracture"),
        "XHIP",
        ("HIP",),
        None,
        _ACUTE,
        sided=True,
        weight=2,
    ),
    _Template(
        "dx_knees",
        "XR Knees bilateral standing",
        "Radiology",
        (_S("DX", "AP standing both knees", 1, "B", ("AP",)),),
        ("Bilateral knee pain ? osteoarthritis",),
        "XKNEB",
        ("KNEE",),
        None,
        _ACUTE,
    ),
    _Template(
        "mg_screen",
        "Mammogram bilateral screening",
        "Breast Screening",
        (_S("MG", "R CC and MLO", 2, "R", ("CC", "MLO")), _S("MG", "L CC and MLO", 2, "L", ("CC", "MLO"))),
        ("NHS Breast Screening Programme routine recall",),
        "XMAMB",
        ("BREAST",),
        ("SCT", "24623002", "Screening mammography"),
        _ACUTE,
        sex="F",
        ages=(50, 71),
        weight=2,
    ),
    _Template(
        "nm_bone",
        "NM Bone Scan Whole Body",
        "Nuclear Medicine",
        (
            _S("NM", "Whole body anterior and posterior", 2),
            _S("NM", "Flow phase dynamic", 1),
            _S("DOC", "Nuclear medicine report"),
        ),
        ("Prostate cancer staging", "Breast cancer ? bone metastases", "Bone pain ? metastatic disease"),
        "NBONW",
        ("WHOLEBODY",),
        None,
        ("christie", "mft", "salford", "bolton", "pennine"),
    ),
    _Template(
        "pet_fdg",
        "PET-CT FDG Half Body",
        "Nuclear Medicine",
        (_S("CT", "CT attenuation correction", 1), _S("PT", "PET AC", 2), _S("SEG", "Tumour segmentation")),
        ("Lymphoma staging", "Lung cancer staging", "Response assessment post chemotherapy"),
        "NPETH",
        ("WHOLEBODY",),
        None,
        ("christie",),
        weight=3,
    ),
    _Template(
        "us_abdo",
        "US Abdomen",
        "Radiology",
        (_S("US", "Abdomen", 2),),
        ("Right upper quadrant pain ? gallstones", "Deranged liver function tests", "Abdominal mass"),
        "UABDO",
        ("ABDOMEN",),
        None,
        _ACUTE,
        weight=3,
    ),
    _Template(
        "echo",
        "Echocardiogram",
        "Cardiology",
        (_S("US", "Transthoracic echo", 2), _S("SR", "Echo measurements report")),
        ("Breathlessness ? heart failure", "New murmur", "Atrial fibrillation"),
        "UECHO",
        ("HEART",),
        ("SCT", "40701008", "Echocardiography"),
        _ACUTE,
        weight=2,
    ),
    _Template(
        "ecg",
        "12-lead ECG",
        "Cardiology",
        (_S("ECG", "Resting 12-lead ECG"),),
        ("Palpitations", "Chest pain", "Pre-operative assessment", "Syncope"),
        "ECG12",
        (),
        ("SCT", "29303009", "Electrocardiographic procedure"),
        weight=2,
        manufacturer="GE Healthcare",
    ),
    _Template(
        "cath",
        "Coronary angiogram",
        "Cardiology",
        (
            _S("XA", "Left coronary artery", 2),
            _S("XA", "Right coronary artery", 1),
            _S("HD", "Haemodynamic recording"),
            _S("DOC", "Cath lab report"),
        ),
        ("Chest pain ? coronary artery disease", "NSTEMI", "Pre-valve surgery assessment"),
        "ACORO",
        ("HEART",),
        ("SCT", "33367005", "Angiography of coronary artery"),
        ("mft", "stockport", "bolton"),
    ),
    _Template(
        "rf_swallow",
        "Barium swallow",
        "Radiology",
        (_S("RF", "Swallow fluoroscopy", 2),),
        ("Dysphagia", "Suspected oesophageal stricture"),
        "FBASW",
        ("ESOPHAGUS",),
        None,
        _ACUTE,
    ),
    _Template(
        "colonoscopy",
        "Colonoscopy",
        "Endoscopy Unit",
        (_S("ES", "Colonoscopy images", 2), _S("DOC", "Endoscopy report")),
        ("Bowel cancer screening positive FIT", "Change in bowel habit", "Iron deficiency anaemia"),
        "ECOLO",
        ("COLON",),
        ("SCT", "73761001", "Colonoscopy"),
        _ACUTE,
        manufacturer="OLYMPUS",
    ),
    _Template(
        "gastroscopy",
        "Gastroscopy",
        "Endoscopy Unit",
        (_S("ES", "OGD images", 2),),
        ("Dyspepsia", "Barrett's oesophagus surveillance"),
        "EOGD",
        ("STOMACH",),
        None,
        _ACUTE,
        manufacturer="OLYMPUS",
    ),
    _Template(
        "wound_photo",
        "Wound photography left foot",
        "Medical Illustration",
        (_S("XC", "Clinical photographs", 2, "L"),),
        ("Diabetic foot ulcer monitoring",),
        "PWOUN",
        ("FOOT",),
        None,
        _ACUTE,
        manufacturer="Canon",
    ),
    _Template(
        "skin_micro",
        "Skin lesion microscopy",
        "Medical Illustration",
        (_S("GM", "Lesion microscopy", 1),),
        ("Pigmented lesion ? melanoma", "Changing naevus"),
        "PSKIN",
        ("BACK",),
        None,
        ("salford", "mft", "stockport"),
        manufacturer="Olympus",
    ),
    _Template(
        "wsi",
        "Histopathology whole slide",
        "Cellular Pathology",
        (_S("SM", "H&E 20x", 1), _S("SM", "Immunohistochemistry", 1), _S("DOC", "Histopathology report")),
        ("Biopsy for histological diagnosis",),
        "HWSIS",
        ("BREAST", "COLON", "PROSTATE"),
        None,
        ("mft", "salford", "christie"),
        manufacturer="Leica Biosystems",
    ),
    _Template(
        "fundus",
        "Fundus photography",
        "Ophthalmology",
        (_S("OP", "Fundus right eye", 1, "R"), _S("OP", "Fundus left eye", 1, "L")),
        ("Diabetic eye screening", "Glaucoma monitoring"),
        "OFUND",
        ("EYE",),
        None,
        ("mft", "bolton", "stockport", "pennine"),
        manufacturer="Topcon",
    ),
    _Template(
        "oct",
        "OCT macula",
        "Ophthalmology",
        (_S("OPT", "Macular cube", 1, "study"),),
        ("Wet AMD monitoring", "Diabetic macular oedema"),
        "OOCTM",
        ("EYE",),
        None,
        ("mft", "bolton", "stockport"),
        sided=True,
        manufacturer="Heidelberg Engineering",
    ),
)
_TEMPLATES_BY_KEY: dict[str, _Template] = {t.key: t for t in _TEMPLATES}

# --------------------------------------------------------------------------- people


@dataclass(frozen=True)
class _NameGroup:
    """Names that go together, so the register reads like Greater Manchester's."""

    weight: int
    surnames: tuple[str, ...]
    male: tuple[str, ...]
    female: tuple[str, ...]
    middle_male: tuple[str, ...] = ()
    middle_female: tuple[str, ...] = ()


_NAME_GROUPS: tuple[_NameGroup, ...] = (
    _NameGroup(
        30,
        (
            "Smith",
            "Jones",
            "Taylor",
            "Brown",
            "Williams",
            "Wilson",
            "Johnson",
            "Davies",
            "Robinson",
            "Wright",
            "Thompson",
            "Evans",
            "Walker",
            "Roberts",
            "Green",
            "Hall",
            "Wood",
            "Jackson",
            "Clarke",
            "Campbell",
            "Stewart",
            "Butterworth",
            "Heywood",
            "Greenhalgh",
            "Ashton",
            "Entwistle",
            "Ramsbottom",
            "Hardcastle",
            "Openshaw",
            "Lomax",
            "Crompton",
            "Haworth",
            "Kershaw",
        ),
        (
            "John",
            "David",
            "Michael",
            "Peter",
            "Paul",
            "James",
            "Robert",
            "Mark",
            "Stephen",
            "Andrew",
            "Harry",
            "George",
            "Oliver",
            "Jack",
            "Alan",
            "Keith",
            "Brian",
            "Derek",
            "Gary",
        ),
        (
            "Margaret",
            "Susan",
            "Patricia",
            "Elizabeth",
            "Sarah",
            "Emma",
            "Claire",
            "Joanne",
            "Karen",
            "Lisa",
            "Grace",
            "Olivia",
            "Amelia",
            "Chloe",
            "Joan",
            "Doreen",
            "Brenda",
            "Hannah",
            "Rebecca",
        ),
        ("James", "John", "Edward", "Thomas", "William"),
        ("Anne", "Louise", "Marie", "Rose", "Jane"),
    ),
    _NameGroup(
        9,
        ("Patel", "Khan", "Ahmed", "Hussain", "Ali", "Shah", "Akhtar", "Iqbal", "Mahmood"),
        ("Mohammed", "Imran", "Tariq", "Arjun", "Rajesh", "Bilal", "Zain"),
        ("Fatima", "Aisha", "Nasreen", "Priya", "Sunita", "Zara", "Saima"),
        ("Ali", "Kumar"),
        ("Bibi", "Devi"),
    ),
    # Sikh naming: Singh for men, Kaur for women.
    _NameGroup(2, ("Singh",), ("Harjit", "Gurpreet", "Manjit"), ()),
    _NameGroup(2, ("Kaur",), (), ("Harpreet", "Jaspreet", "Simran")),
    _NameGroup(
        4,
        ("Murphy", "Kelly", "O'Connor", "Byrne", "Walsh", "Doyle"),
        ("Liam", "Connor", "Sean", "Patrick", "Declan"),
        ("Siobhan", "Aoife", "Niamh", "Ciara", "Mary"),
        ("Joseph", "Patrick"),
        ("Mary", "Bernadette"),
    ),
    _NameGroup(
        2, ("Nowak", "Mazur", "Krawczyk"), ("Tomasz", "Piotr", "Marek"), ("Agnieszka", "Katarzyna", "Magdalena")
    ),
    _NameGroup(
        3,
        ("Okonkwo", "Mensah", "Adeyemi", "Okafor", "Asante"),
        ("Kwame", "Chinedu", "Emeka", "Kofi"),
        ("Chiamaka", "Abena", "Ngozi", "Ama"),
    ),
    _NameGroup(2, ("Chen", "Li", "Wong", "Zhang"), ("Wei", "Jun", "Hao"), ("Mei", "Ling", "Xin")),
)

# Non-ASCII patients: (family, given, sex, SpecificCharacterSet written for them).
_NON_ASCII = (
    ("Ó'Brien", "Zoë", "F", "ISO_IR 192"),
    ("Nowak", "Łucja", "F", "ISO_IR 192"),
    ("Müller", "Renée", "F", "ISO_IR 100"),
)

_REFERRERS = (
    "Ahmed^Farhana^^Dr",
    "Brennan^Patrick^^Dr",
    "Chowdhury^Rahul^^Dr",
    "Davies^Eleri^^Dr",
    "Fletcher^Simon^^Dr",
    "Greenwood^Alison^^Dr",
    "Hussain^Tariq^^Dr",
    "Jones^Bethan^^Dr",
    "Kaur^Manpreet^^Dr",
    "Lloyd^Gareth^^Dr",
    "McAllister^Fiona^^Dr",
    "Okafor^Chinedu^^Dr",
    "Pearson^Helen^^Dr",
    "Rahman^Ayesha^^Dr",
    "Taylor^Mark^^Dr",
    "Wong^Mei^^Dr",
)
_READERS = (
    "Ashworth^Claire^^Dr",
    "Bhatt^Nikhil^^Dr",
    "Crossley^Jonathan^^Dr",
    "Dempsey^Aoife^^Dr",
    "Eccles^Richard^^Dr",
    "Iqbal^Sana^^Dr",
    "Morris^Catherine^^Dr",
    "Nwosu^Adaeze^^Dr",
    "Sutcliffe^James^^Dr",
    "Zhang^Wei^^Dr",
)
_OPERATORS = (
    "Barlow^Kirsty",
    "Collins^Dean",
    "Doherty^Niamh",
    "Holt^Gemma",
    "Kowalski^Piotr",
    "Mistry^Priya",
    "Riley^Jordan",
    "Schofield^Amy",
    "Thornton^Luke",
    "Yusuf^Amina",
)
# Departments where a clinician (not a radiographer) performs the procedure.
_PERFORMED_BY_CLINICIAN = frozenset({"Cardiology", "Endoscopy Unit", "Ophthalmology"})

_TRUST_WEIGHTS = {
    "bolton": 3,
    "christie": 2,
    "mft": 4,
    "stockport": 3,
    "wwl": 3,
    "tameside": 2,
    "salford": 3,
    "pennine": 3,
}
_N_PATIENTS = 66
_FIRST_DATE = dt.date(2015, 1, 5)
_LAST_DATE = dt.date(2026, 10, 30)

# Indexes of patients that carry a special case (see _plan).
_P_MULTI_TRUST = 0
_P_CONFLICT = 4
_P_SEX_OTHER = 7
_FIRST_ANCHOR_PATIENT = 5
_FIRST_QUIRK_PATIENT = 40

# Odd-data cases: issue -> (attribute, value written); value None means "absent".
_QUIRKS: tuple[tuple[str, str, str | None], ...] = (
    ("invalid_study_date", "StudyDate", "20231345"),
    ("missing_description_and_time", "StudyDescription,StudyTime", None),
    ("multi_valued_referrer", "ReferringPhysicianName", "Khan^Imran^^Dr\\Evans^Rhiannon^^Dr"),
    ("empty_accession", "AccessionNumber", ""),
    ("partial_time_hour", "StudyTime", "14"),
    ("partial_time_minute", "StudyTime", "1430"),
    ("no_body_part", "BodyPartExamined", None),
)
_QUIRK_MODALITIES = frozenset({"CT", "MR", "CR", "DX", "US"})


# --------------------------------------------------------------------------- manifest


@dataclass
class StudyEntry:
    """One study as the manifest records it (union over the trusts holding it)."""

    study_uid: str
    trusts: list[str]
    modalities: list[str]
    accession: str
    study_date: str
    study_time: str | None
    timezone_offset: str | None
    description: str | None
    number_of_series: int
    number_of_instances: int
    holdings: dict[str, dict[str, int]]  # trust -> {"series": n, "instances": n}


@dataclass
class PatientEntry:
    nhs_number: str
    name: str
    birth_date: str
    sex: str
    trusts: list[str]
    local_ids: dict[str, str]  # xref trust -> local PatientID
    studies: list[StudyEntry]


@dataclass
class Manifest:
    seed: int
    trusts: list[dict[str, str]]
    counts: dict[str, int]
    patients: list[PatientEntry]
    facts: dict[str, Any]
    generator_version: int = GENERATOR_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def studies(self) -> list[StudyEntry]:
        return [s for p in self.patients for s in p.studies]


# --------------------------------------------------------------------------- planning


@dataclass
class _Patient:
    index: int
    nhs_number: str
    family: str
    given: str
    middle: str
    sex: str
    birth_date: dt.date
    charset: str | None = None  # forced for non-ASCII names
    trusts: list[str] = field(default_factory=list)
    local_ids: dict[str, str] = field(default_factory=dict)
    birth_date_by_trust: dict[str, dt.date] = field(default_factory=dict)

    @property
    def name(self) -> str:
        parts = [self.family, self.given] + ([self.middle] if self.middle else [])
        return "^".join(parts)

    def age_on(self, day: dt.date) -> int:
        before = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - int(before)


@dataclass
class _Series:
    uid: str
    number: int
    spec: _SeriesSpec
    instance_uids: list[str]
    holders: tuple[str, ...]
    side: str | None
    source: str  # trust whose equipment made it: copies keep the original equipment


@dataclass
class _Study:
    key: str
    uid: str
    patient: _Patient
    template: _Template
    trusts: tuple[str, ...]  # first = the trust that acquired it
    date: dt.date
    time: str
    side: str | None
    body_part: str | None
    reason: str
    referrer: str
    reader: str
    operators: list[str]
    frame_of_reference: str
    quirk: str | None = None
    full_size: bool = False  # images at full size and full stacks (see _size_images)
    lesion: bool = False  # the patient's anatomy has a tumour (oncology patients)
    accession: str = ""
    study_id: str = ""
    series: list[_Series] = field(default_factory=list)

    @property
    def description(self) -> str:
        side = {"L": "Left", "R": "Right"}.get(self.side or "", "")
        return self.template.description.replace("{side}", side)


def _uid(seed: int, key: str) -> str:
    """A stable 2.25 UID: a version-4-shaped UUID taken from a hash of seed and key."""
    digest = hashlib.sha256(f"gm-demo|{seed}|{key}".encode()).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


def _new_nhs_number(rng: random.Random, used: set[str]) -> str:
    # 999 prefix: the NHS test range, so no number belongs to a real person.
    while True:
        first = "999" + f"{rng.randrange(10**6):06d}"
        check = nhs_check_digit(first)
        if check is not None and (number := f"{first}{check}") not in used:
            used.add(number)
            return number


def _random_date(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def _weighted_sample(rng: random.Random, weights: dict[str, int], k: int) -> list[str]:
    pool = dict(weights)
    chosen: list[str] = []
    for _ in range(k):
        keys = list(pool)
        pick = rng.choices(keys, weights=[pool[x] for x in keys])[0]
        chosen.append(pick)
        del pool[pick]
    return chosen


def _random_name(rng: random.Random, sex: str, used: set[tuple[str, str]]) -> tuple[str, str, str]:
    """(family, given, middle), unique on family + given."""
    groups = [g for g in _NAME_GROUPS if sex not in "MF" or (g.male if sex == "M" else g.female)]
    while True:
        group = rng.choices(groups, weights=[g.weight for g in groups])[0]
        family = rng.choice(group.surnames)
        # "Alex" for the patient of sex O: a name used by any sex.
        given = "Alex" if sex == "O" else rng.choice(group.male if sex == "M" else group.female)
        if (family, given) not in used:
            break
    used.add((family, given))
    middles = {"M": group.middle_male, "F": group.middle_female}.get(sex, ())
    middle = rng.choice(middles) if middles and rng.random() < 0.3 else ""
    return family, given, middle


def _make_patients(rng: random.Random) -> list[_Patient]:
    used_nhs: set[str] = set()
    used_names: set[tuple[str, str]] = set()
    patients: list[_Patient] = []
    for index in range(_N_PATIENTS):
        if 1 <= index <= len(_NON_ASCII):
            family, given, sex, charset = _NON_ASCII[index - 1]
            middle = ""
            used_names.add((family, given))
        else:
            sex = "O" if index == _P_SEX_OTHER else rng.choice("MF")
            charset = None
            family, given, middle = _random_name(rng, sex, used_names)
        birth = _random_date(rng, dt.date(1938, 1, 1), dt.date(2001, 12, 31))
        patients.append(_Patient(index, _new_nhs_number(rng, used_nhs), family, given, middle, sex, birth, charset))
    return patients


def _choose_trusts(rng: random.Random, patient: _Patient) -> None:
    if patient.index == _P_MULTI_TRUST:
        # Both identity styles: bolton/mft use the NHS number, christie/stockport MRNs.
        patient.trusts = ["bolton", "christie", "mft", "stockport"]
        return
    k = rng.choices((1, 2, 3, 4), weights=(1, 5, 4, 2))[0]
    if patient.index == _P_CONFLICT:
        k = max(k, 2)  # the conflict needs two trusts
    patient.trusts = _weighted_sample(rng, _TRUST_WEIGHTS, k)


def _eligible(template: _Template, patient: _Patient, day: dt.date) -> bool:
    if template.sex and template.sex != patient.sex:
        return False
    low, high = template.ages
    return low <= patient.age_on(day) <= high


def _feasible(template: _Template, patient: _Patient) -> bool:
    if template.sex and template.sex != patient.sex:
        return False
    low, high = template.ages
    return patient.age_on(_FIRST_DATE) <= high and patient.age_on(_LAST_DATE) >= low


def _date_for(rng: random.Random, template: _Template, patient: _Patient) -> dt.date:
    start = max(_FIRST_DATE, patient.birth_date + dt.timedelta(days=366 * 18))
    for _ in range(200):
        day = _random_date(rng, start, _LAST_DATE)
        if _eligible(template, patient, day):
            return day
    raise RuntimeError(f"no date fits {template.key} for patient {patient.index}")


def _pick_template(rng: random.Random, trust: str, patient: _Patient, day: dt.date) -> _Template:
    options = [t for t in _TEMPLATES if trust in t.trusts and _eligible(t, patient, day)]
    return rng.choices(options, weights=[t.weight for t in options])[0]


def _new_study(
    rng: random.Random,
    seed: int,
    patient: _Patient,
    number: int,
    template: _Template,
    trust: str,
    day: dt.date,
) -> _Study:
    key = f"p{patient.index}/s{number}"
    hour, minute, second = rng.randrange(8, 20), rng.randrange(60), rng.randrange(60)
    operators = rng.sample(_OPERATORS, rng.choice((1, 1, 2)))
    return _Study(
        key=key,
        uid=_uid(seed, f"{key}/study"),
        patient=patient,
        template=template,
        trusts=(trust,),
        date=day,
        time=f"{hour:02d}{minute:02d}{second:02d}",
        side=rng.choice("LR") if template.sided else None,
        body_part=rng.choice(template.body_parts) if template.body_parts else None,
        reason=rng.choice(template.reasons),
        referrer=rng.choice(_REFERRERS),
        reader=rng.choice(_READERS),
        operators=operators,
        frame_of_reference=_uid(seed, f"{key}/for"),
    )


def _anchors(patients: Sequence[_Patient]) -> dict[int, _Template]:
    """One patient per template, so every specialty exists at least once."""
    anchors: dict[int, _Template] = {}
    for template in _TEMPLATES:
        for patient in patients[_FIRST_ANCHOR_PATIENT:_FIRST_QUIRK_PATIENT]:
            if patient.index not in anchors and _feasible(template, patient):
                anchors[patient.index] = template
                break
        else:
            raise RuntimeError(f"no patient can anchor {template.key}")
    return anchors


def _plan_patient(rng: random.Random, seed: int, patient: _Patient, forced: list[tuple[str, str]]) -> list[_Study]:
    n_studies = 6 if forced and patient.index == _P_MULTI_TRUST else rng.randint(4, 6)
    for _key, trust in forced:
        if trust not in patient.trusts:
            # The anchor's specialty lives elsewhere: the patient was referred there.
            if len(patient.trusts) < 4:
                patient.trusts.append(trust)
            else:
                patient.trusts[-1] = trust
    studies: list[_Study] = []
    for number in range(n_studies):
        if number < len(forced):
            key, trust = forced[number]
            template = _TEMPLATES_BY_KEY[key]
            day = _date_for(rng, template, patient)
        else:
            # Visit every trust of the patient before repeating one.
            unused = [t for t in patient.trusts if t not in {s.trusts[0] for s in studies}]
            trust = unused[0] if unused else rng.choice(patient.trusts)
            start = max(_FIRST_DATE, patient.birth_date + dt.timedelta(days=366 * 18))
            day = _random_date(rng, start, _LAST_DATE)
            template = _pick_template(rng, trust, patient, day)
        studies.append(_new_study(rng, seed, patient, number, template, trust, day))
    return studies


def _forced_studies(rng: random.Random, patient: _Patient, anchors: dict[int, _Template]) -> list[tuple[str, str]]:
    if patient.index == _P_MULTI_TRUST:
        return [("ct_cap", "bolton"), ("pet_fdg", "christie"), ("mr_brain", "mft"), ("cr_chest", "stockport")]
    template = anchors.get(patient.index)
    if template is None:
        return []
    shared = [t for t in patient.trusts if t in template.trusts]
    return [(template.key, rng.choice(shared or list(template.trusts)))]


# --------------------------------------------------------------------------- special cases


def _make_shared(seed: int, study: _Study) -> _Series:
    """Bolton's CT sent to The Christie for an oncology opinion; Christie adds a SEG."""
    study.trusts = ("bolton", "christie")
    extra = _Series(
        uid=_uid(seed, f"{study.key}/christie-extra"),
        number=len(study.template.series) + 1,
        spec=_SeriesSpec("SEG", "Tumour segmentation (Christie oncology review)"),
        instance_uids=[_uid(seed, f"{study.key}/christie-extra/0")],
        holders=("christie",),
        side=None,
        source="christie",
    )
    return extra


def _assign_quirks(patients: Sequence[_Patient], studies: dict[int, list[_Study]]) -> None:
    """One odd-data case per patient, on an ordinary radiology study."""
    pending = [issue for issue, _, _ in _QUIRKS]
    for patient in patients[_FIRST_QUIRK_PATIENT:]:
        candidates = [s for s in studies[patient.index] if s.template.modalities() & _QUIRK_MODALITIES and s.body_part]
        if candidates and pending:
            candidates[0].quirk = pending.pop(0)
    if pending:
        raise RuntimeError(f"no study left for odd-data cases {pending}")


def _make_conflict(patient: _Patient, studies: Sequence[_Study]) -> list[str]:
    """Give the patient's second trust a wrong birth date (day and month swapped)."""
    trusts: list[str] = []
    for study in studies:
        if study.trusts[0] not in trusts:
            trusts.append(study.trusts[0])
    good = patient.birth_date
    if good.day <= 12 and good.day != good.month:
        wrong = dt.date(good.year, good.day, good.month)
    else:  # a mistyped year; 29 February becomes 1 March
        wrong = dt.date(good.year + 1, good.month, 1) + dt.timedelta(days=good.day - 1)
    patient.birth_date_by_trust[trusts[1]] = wrong
    return trusts[:2]


def _assign_accessions(rng: random.Random, studies: Sequence[_Study]) -> None:
    for trust in TRUSTS:
        own = sorted((s for s in studies if s.trusts[0] == trust.id), key=lambda s: (s.date, s.key))
        digits = _PROFILES[trust.id].accession_digits
        start = rng.randrange(10 ** (digits - 2), 10 ** (digits - 1))
        for n, study in enumerate(own):
            # The empty-accession case still uses up a number, as a RIS would.
            empty = study.quirk == "empty_accession"
            study.accession = "" if empty else f"{trust.ods_code}{start + n:0{digits}d}"
            study.study_id = str(1000 + n)


def _build_series(seed: int, study: _Study) -> None:
    for j, spec in enumerate(study.template.series):
        key = f"{study.key}/series{j}"
        side = study.side if spec.side == "study" else spec.side
        study.series.append(
            _Series(
                uid=_uid(seed, key),
                number=j + 1,
                spec=spec,
                instance_uids=[_uid(seed, f"{key}/{i}") for i in range(spec.count)],
                holders=study.trusts,
                side=side,
                source=study.trusts[0],
            )
        )


def _assign_local_ids(rng: random.Random, patients: Sequence[_Patient], studies: dict[int, list[_Study]]) -> None:
    used: set[str] = set()
    for patient in patients:
        held = {t for s in studies[patient.index] for t in s.trusts}
        for trust in TRUSTS:
            if trust.identity == "xref" and trust.id in held:
                while (local := f"{trust.ods_code}{rng.randrange(10**6, 10**7):07d}") in used:
                    pass
                used.add(local)
                patient.local_ids[trust.id] = local


@dataclass
class _Plan:
    patients: list[_Patient]
    studies: dict[int, list[_Study]]
    shared: _Study
    shared_extra: _Series
    conflict_trusts: list[str]


def _plan(seed: int) -> _Plan:
    rng = random.Random(seed)
    patients = _make_patients(rng)
    for patient in patients:
        _choose_trusts(rng, patient)
    anchors = _anchors(patients)
    studies: dict[int, list[_Study]] = {}
    for patient in patients:
        forced = _forced_studies(rng, patient, anchors)
        studies[patient.index] = _plan_patient(rng, seed, patient, forced)
    shared = studies[_P_MULTI_TRUST][0]
    extra = _make_shared(seed, shared)
    _assign_quirks(patients, studies)
    conflict = _make_conflict(patients[_P_CONFLICT], studies[_P_CONFLICT])
    everything = [s for p in patients for s in studies[p.index]]
    _assign_accessions(rng, everything)
    for study in everything:
        _build_series(seed, study)
    shared.series.append(extra)
    _assign_local_ids(rng, patients, studies)
    for patient in patients:
        studies[patient.index].sort(key=lambda s: (s.date, s.key))
    plan = _Plan(patients, studies, shared, extra, conflict)
    _size_images(seed, plan)
    return plan


# --------------------------------------------------------------------------- DICOM helpers


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _utc_offset(day: dt.date) -> str:
    """UK offset: +0100 during BST (last Sunday of March to last Sunday of October)."""

    def last_sunday(month: int) -> dt.date:
        last = dt.date(day.year, month, 31)
        return last - dt.timedelta(days=(last.weekday() + 1) % 7)

    return "+0100" if last_sunday(3) <= day < last_sunday(10) else "+0000"


def _age_string(patient: _Patient, day: dt.date) -> str:
    return f"{max(patient.age_on(day), 0):03d}Y"


def _written_name(patient: _Patient, trust: str) -> str:
    if _PROFILES[trust].upper_names and patient.name.isascii():
        return patient.name.upper()
    return patient.name


def _charset(patient: _Patient, trust: str) -> str | None:
    return patient.charset or _PROFILES[trust].charset


def _study_time(study: _Study, trust: str) -> str | None:
    if study.quirk == "missing_description_and_time":
        return None
    if study.quirk == "partial_time_hour":
        return "14"
    if study.quirk == "partial_time_minute":
        return "1430"
    return study.time + (".000000" if _PROFILES[trust].fractional_time else "")


def _study_date(study: _Study) -> str:
    return "20231345" if study.quirk == "invalid_study_date" else study.date.strftime("%Y%m%d")


def _add_patient(ds: Dataset, patient: _Patient, trust: Trust) -> None:
    ds.PatientName = _written_name(patient, trust.id)
    birth = patient.birth_date_by_trust.get(trust.id, patient.birth_date)
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    if trust.identity == "nhs":
        ds.PatientID = patient.nhs_number
        ds.IssuerOfPatientID = "NHS"
        qualifier = Dataset()
        qualifier.UniversalEntityID = NHS_NUMBER_OID
        qualifier.UniversalEntityIDType = "ISO"
        ds.IssuerOfPatientIDQualifiersSequence = [qualifier]
    else:
        ds.PatientID = patient.local_ids[trust.id]
        ds.IssuerOfPatientID = trust.ods_code
        other = Dataset()
        other.PatientID = patient.nhs_number
        other.IssuerOfPatientID = "NHS"
        other.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = [other]


def _procedure_code(study: _Study, trust: Trust) -> Dataset:
    template = study.template
    if template.code and not _PROFILES[trust.id].local_coding:
        return _code(template.code[1], template.code[0], template.code[2])
    value = template.local_code + (study.side or "")
    return _code(value, f"99{trust.ods_code}", study.description)


def _add_study(ds: Dataset, study: _Study, owner: Trust) -> None:
    """Study-level attributes: always from the acquiring trust (copies keep them)."""
    ds.StudyInstanceUID = study.uid
    # validation_mode=IGNORE: the invalid-date case is deliberate, not a bug to warn about.
    ds.add(DataElement(0x00080020, "DA", _study_date(study), validation_mode=config.IGNORE))
    time_value = _study_time(study, owner.id)
    if time_value is not None:
        ds.StudyTime = time_value
    if _PROFILES[owner.id].timezone:
        ds.TimezoneOffsetFromUTC = _utc_offset(study.date)
    ds.AccessionNumber = study.accession
    if study.accession:
        issuer = Dataset()
        issuer.LocalNamespaceEntityID = owner.ods_code
        ds.IssuerOfAccessionNumberSequence = [issuer]
    ds.StudyID = study.study_id
    if study.quirk != "missing_description_and_time":
        ds.StudyDescription = study.description
    if study.quirk == "multi_valued_referrer":
        ds.ReferringPhysicianName = ["Khan^Imran^^Dr", "Evans^Rhiannon^^Dr"]
    else:
        ds.ReferringPhysicianName = study.referrer
    ds.NameOfPhysiciansReadingStudy = study.reader
    ds.ProcedureCodeSequence = [_procedure_code(study, owner)]
    ds.ReasonForTheRequestedProcedure = study.reason
    request = Dataset()
    request.RequestedProcedureID = study.study_id
    request.ReasonForTheRequestedProcedure = study.reason
    ds.RequestAttributesSequence = [request]
    ds.PatientAge = _age_string(study.patient, study.date)


def _add_series(ds: Dataset, study: _Study, series: _Series) -> None:
    template = study.template
    trust = TRUSTS_BY_ID[series.source]
    ds.SeriesInstanceUID = series.uid
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.spec.description
    ds.Modality = series.spec.modality
    ds.SeriesDate = study.date.strftime("%Y%m%d")
    hour, minute = int(study.time[:2]), int(study.time[2:4]) + series.number * 3
    ds.SeriesTime = f"{hour + minute // 60:02d}{minute % 60:02d}{study.time[4:6]}"
    site = _SITE_OVERRIDES.get((trust.id, template.department), _SITES[trust.id])
    ds.InstitutionName = site.institution
    ds.InstitutionAddress = site.address
    ds.InstitutionalDepartmentName = template.department
    ds.Manufacturer = template.manufacturer or _PROFILES[trust.id].manufacturer
    ds.StationName = f"{trust.ods_code}{series.spec.modality}{series.number:02d}"
    if template.department in _PERFORMED_BY_CLINICIAN:
        ds.PerformingPhysicianName = study.reader
    ds.OperatorsName = study.operators
    if study.body_part and study.quirk != "no_body_part" and series.spec.modality != "DOC":
        ds.BodyPartExamined = study.body_part
    if series.side in ("L", "R") and series.spec.modality not in _NON_IMAGE:
        ds.Laterality = series.side


# Files are assembled from three layers (study, series, instance), each built and
# encoded once: element-by-element encoding in pydicom costs milliseconds per file, and
# without this the generator would take well over the few seconds it is allowed.


def _study_layer(study: _Study, trust: Trust) -> Dataset:
    """Patient and study attributes, as written by one holding trust."""
    ds = Dataset()
    charset = _charset(study.patient, trust.id)
    if charset:
        ds.SpecificCharacterSet = charset
    ds.InstanceCreationDate = study.date.strftime("%Y%m%d")
    ds.InstanceCreationTime = study.time
    ds.ContentDate = study.date.strftime("%Y%m%d")
    ds.ContentTime = study.time
    _add_patient(ds, study.patient, trust)
    _add_study(ds, study, TRUSTS_BY_ID[study.trusts[0]])
    return ds


def _series_layer(study: _Study, series: _Series) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS_BY_MODALITY[series.spec.modality]
    _add_series(ds, study, series)
    return ds


# --------------------------------------------------------------------------- pixels
#
# Real-looking images (tools/demo/pixels.py) at two sizes. A few studies are *full size*: every study of
# the multi-trust patient (the demo's first patient) and the example study of each image modality
# (facts.specialty_studies), listed in facts.full_size_studies. Their images have the
# sizes a viewer expects (CT 512x512, MR 256x256, radiographs 1024+ on the short side, colour images
# 1024x768, ultrasound 640x480) and their cross-sectional series are stacks of _FULL_STACK slices. Every
# other study has the same content at a reduced matrix and as many slices as its catalogue entry says:
# a dataset of ~340 studies at full size would not fit the demo's size budget.

_FULL_STACK = 10  # slices per CT, MR and PET series of a full-size study
_CROSS_SECTIONAL = frozenset({"CT", "MR", "PT"})
_TILE = 256  # whole-slide tiles
_SM_LEVELS = (3, 2)  # pyramid levels at full size (base 1024x1024) and reduced (base 512x512)


@dataclass(frozen=True)
class _Stack:
    """Where a cross-sectional series' slices are: a view through a centre, its field of view, the
    range its slices are spread over along the view's normal, and how it looks."""

    view: str
    center: tuple[float, float, float]
    fov: tuple[float, float]
    extent: tuple[float, float]
    thickness: float
    look: str  # CT: "plain", "contrast", "sharp"; MR: a weighting; PT: "fdg"; "localizer"
    window: tuple[float, float] = (40.0, 400.0)


# Cross-sectional series by (template, series description). Knee stacks are centred on the study's side.
_STACKS: dict[tuple[str, str], _Stack] = {
    ("ct_cap", "Topogram"): _Stack("coronal", (0, 0, 1150), (700, 700), (0, 0), 1.0, "localizer"),
    ("ct_cap", "Axial 5mm portal venous"): _Stack("axial", (0, 0, 0), (480, 480), (860, 1420), 5.0, "contrast"),
    ("ct_cap", "Coronal 3mm"): _Stack("coronal", (0, 0, 1140), (620, 620), (-70, 70), 3.0, "contrast"),
    ("ct_head", "Head axial 5mm"): _Stack("axial", (0, 0, 0), (240, 240), (1530, 1700), 5.0, "plain", (40, 80)),
    ("ct_head", "Head bone window"): _Stack("axial", (0, 0, 0), (240, 240), (1530, 1700), 5.0, "sharp", (500, 2000)),
    ("ct_chest", "Axial lung 1mm"): _Stack("axial", (0, 0, 0), (420, 420), (1150, 1430), 1.0, "sharp", (-600, 1500)),
    ("ct_chest", "Axial mediastinum 3mm"): _Stack("axial", (0, 0, 0), (420, 420), (1150, 1430), 3.0, "plain"),
    ("pet_fdg", "CT attenuation correction"): _Stack("axial", (0, 0, 0), (600, 600), (1020, 1470), 5.0, "sharp"),
    ("pet_fdg", "PET AC"): _Stack("axial", (0, 0, 0), (600, 600), (1020, 1470), 4.0, "fdg"),
    ("mr_knee", "PD FS sagittal"): _Stack("sagittal", (0, 0, 480), (160, 160), (-40, 40), 3.0, "PDFS"),
    ("mr_knee", "T1 coronal"): _Stack("coronal", (0, 0, 480), (160, 160), (-30, 40), 3.0, "T1"),
    ("mr_knee", "PD FS axial"): _Stack("axial", (0, 0, 0), (160, 160), (430, 530), 3.0, "PDFS"),
    ("mr_brain", "T2 axial"): _Stack("axial", (0, 0, 0), (230, 230), (1530, 1690), 5.0, "T2"),
    ("mr_brain", "FLAIR axial"): _Stack("axial", (0, 0, 0), (230, 230), (1530, 1690), 5.0, "FLAIR"),
    ("mr_brain", "DWI"): _Stack("axial", (0, 0, 0), (230, 230), (1530, 1690), 5.0, "DWI"),
    ("mr_lspine", "T2 sagittal"): _Stack("sagittal", (0, 40, 960), (320, 320), (-24, 24), 4.0, "T2"),
    ("mr_lspine", "T1 sagittal"): _Stack("sagittal", (0, 40, 960), (320, 320), (-24, 24), 4.0, "T1"),
    ("mr_lspine", "T2 axial"): _Stack("axial", (0, 50, 0), (200, 200), (870, 1050), 4.0, "T2"),
    ("mr_prostate", "T2 axial"): _Stack("axial", (0, -10, 0), (180, 180), (815, 875), 3.0, "T2"),
    ("mr_prostate", "DWI b1400"): _Stack("axial", (0, -10, 0), (180, 180), (815, 875), 3.0, "DWI"),
    ("mr_prostate", "DCE"): _Stack("axial", (0, -10, 0), (180, 180), (815, 875), 3.0, "DCE"),
}
_MR_WINDOW = (1100.0, 2200.0)

# (rows, columns) at full size and reduced; frames where the images are multi-frame. Reduced ultrasound
# is grey (MONOCHROME2, as many scanners store B-mode); full-size ultrasound is RGB.
_SIZES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "CT": ((512, 512), (160, 160)),
    "MR": ((256, 256), (128, 128)),
    "PT": ((128, 128), (128, 128)),
    "CR": ((1280, 1024), (320, 256)),
    "MG": ((1024, 832), (320, 256)),
    "US": ((480, 640), (192, 256)),
    "XA": ((512, 512), (256, 256)),
    "RF": ((512, 512), (256, 256)),
    "ES": ((768, 1024), (240, 320)),
    "XC": ((768, 1024), (240, 320)),
    "GM": ((768, 1024), (240, 320)),
    "OP": ((768, 1024), (240, 320)),
    "OPT": ((496, 512), (248, 256)),
    "SM": ((1024, 1024), (512, 512)),  # the base level's total pixel matrix
}
_DX_SIZES = (((1024, 1280), (256, 320)),)  # landscape: pelvis, knees
_FRAMES = {"XA": (12, 6), "RF": (8, 6), "OPT": (16, 8)}
_NM_WHOLE_BODY = ((1024, 256), (512, 128))
_NM_DYNAMIC = ((128, 128), (64, 64))
_NM_DYNAMIC_FRAMES = 32


def _seed_of(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _full_size_keys(plan: _Plan) -> set[str]:
    everything = [s for p in plan.patients for s in plan.studies[p.index]]
    keys = {s.key for s in plan.studies[_P_MULTI_TRUST]}
    image_modalities = [m for m in SPECIALTY_MODALITIES if m not in _NON_IMAGE]
    by_uid = {s.uid: s for s in everything}
    return keys | {by_uid[_specialty_study(everything, plan.shared, m)].key for m in image_modalities}


def _size_images(seed: int, plan: _Plan) -> None:
    """Mark the full-size studies, give their cross-sectional series full stacks and every
    whole-slide series its pyramid levels."""
    keys = _full_size_keys(plan)
    for patient in plan.patients:
        oncology = any(s.template.key == "pet_fdg" for s in plan.studies[patient.index])
        for study in plan.studies[patient.index]:
            study.lesion = oncology
            study.full_size = study.key in keys
            for j, series in enumerate(study.series[: len(study.template.series)]):
                key = f"{study.key}/series{j}"
                if series.spec.modality == "SM":  # one instance per pyramid level
                    levels = _SM_LEVELS[0 if study.full_size else 1]
                    series.instance_uids = [_uid(seed, f"{key}/{i}") for i in range(levels)]
                stack = _STACKS.get((study.template.key, series.spec.description))
                if study.full_size and stack is not None and stack.look != "localizer":
                    series.instance_uids = [_uid(seed, f"{key}/{i}") for i in range(_FULL_STACK)]


def _anatomy(study: _Study) -> tuple[pixels.Shape, ...]:
    patient = study.patient
    return pixels.human("M" if patient.sex == "M" else "F", (0.92, 1.0, 1.08)[patient.index % 3], study.lesion)


def _stack_plane(study: _Study, series: _Series, index: int) -> tuple[_Stack, pixels.Plane]:
    stack = _STACKS[(study.template.key, series.spec.description)]
    size = _SIZES[series.spec.modality][0 if study.full_size else 1]
    center = list(stack.center)
    if study.template.key == "mr_knee":  # the study's knee: patient left is +x
        center[0] = 100.0 if series.side == "L" else -100.0
    normal = {"axial": 2, "coronal": 1, "sagittal": 0}[stack.view]
    if stack.look != "localizer":
        count = len(series.instance_uids)
        lo, hi = stack.extent
        center[normal] += lo + (index + 0.5) * (hi - lo) / count
    grid = pixels.plane(stack.view, (center[0], center[1], center[2]), stack.fov, size)
    return stack, grid


def _put_pixels(ds: Dataset, array: Any, *, bits: int, multi_frame: bool = False) -> None:
    """Pixel data and the Image Pixel module from an array (frames, rows, cols[, 3]) or (rows, cols[, 3])."""
    import numpy as np

    rgb = array.shape[-1] == 3 and array.ndim in (3, 4)
    frames = array.shape[0] if array.ndim == (4 if rgb else 3) else 1
    rows, cols = array.shape[-3:-1] if rgb else array.shape[-2:]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(rows), int(cols)
    allocated = 8 if bits <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits, bits - 1
    ds.PixelRepresentation = 0
    if multi_frame or frames > 1:
        ds.NumberOfFrames = frames
    data = np.ascontiguousarray(array, dtype=np.uint8 if allocated == 8 else "<u2").tobytes()
    ds.add_new(0x7FE00010, "OW" if allocated > 8 else "OB", data + b"\x00" * (len(data) % 2))


def _auto_window(ds: Dataset, array: Any) -> None:
    import numpy as np

    low, high = (float(v) for v in np.percentile(array, (1, 99.5)))
    ds.WindowCenter, ds.WindowWidth = f"{(low + high) / 2:.0f}", f"{max(high - low, 1):.0f}"


# --------------------------------------------------------------------------- per modality


def _image(ds: Dataset, study: _Study, series: _Series, index: int) -> None:
    """Image IODs: pixels plus the few attributes viewers and archives look at."""
    modality = series.spec.modality
    views = series.spec.views
    seed = _seed_of(ds.SOPInstanceUID)
    full = 0 if study.full_size else 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if views:
        ds.ViewPosition = views[index % len(views)]
    if series.side:
        ds.ImageLaterality = series.side
    if modality in _CROSS_SECTIONAL:
        _cross_sectional(ds, study, series, index)
    elif modality in ("CR", "DX", "MG"):
        _projection_radiograph(ds, study, series, index)
    elif modality == "NM":
        _nuclear_medicine(ds, study, series, index)
    elif modality in ("XA", "RF"):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
        ds.KVP = "80"
        rows, cols = _SIZES[modality][full]
        frames = _FRAMES[modality][full]
        if modality == "XA":
            right = series.spec.description.startswith("Right")
            cine = _cached_grey("angio", rows, cols, frames, right, seed % 3)
            ds.FrameTime, ds.CineRate = "66.7", 15
        else:
            cine = _cached_grey("fluoro", rows, cols, frames, False, seed % 3)
            ds.FrameTime, ds.CineRate = "250", 4
        ds.add_new(0x00280009, "AT", [0x00181063])  # FrameIncrementPointer: FrameTime
        ds.WindowCenter, ds.WindowWidth = "128", "256"
        _put_pixels(ds, cine, bits=8, multi_frame=True)
    elif modality == "OPT":
        rows, cols = _SIZES[modality][full]
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        _put_pixels(
            ds, _cached_grey("oct", rows, cols, _FRAMES["OPT"][full], False, seed % 3), bits=8, multi_frame=True
        )
    elif modality in ("US", "ES", "XC", "GM", "OP"):
        rows, cols = _SIZES[modality][full]
        kind = {
            "US": "echo" if study.template.key == "echo" else "abdomen",
            "ES": "colon" if study.template.key == "colonoscopy" else "gastric",
            "XC": "wound",
            "GM": "lesion",
            "OP": f"fundus-{series.side or 'R'}",
        }[modality]
        image = _cached_colour(kind, rows, cols, (seed + index) % 3)
        if modality == "US" and not study.full_size:
            image = image[..., 0]
        _put_pixels(ds, image, bits=8)
    elif modality == "SM":
        _whole_slide(ds, study, series, index)


def _cached_colour(kind: str, rows: int, cols: int, variant: int) -> Any:
    return _colour_image(kind, rows, cols, variant)


@lru_cache(maxsize=48)
def _colour_image(kind: str, rows: int, cols: int, variant: int) -> Any:
    seed = _seed_of(kind, variant)
    if kind in ("echo", "abdomen"):
        return pixels.ultrasound(rows, cols, cardiac=kind == "echo", seed=seed)
    if kind in ("colon", "gastric"):
        return pixels.endoscopy(rows, cols, colon=kind == "colon", seed=seed)
    if kind == "wound":
        return pixels.wound_photograph(rows, cols, seed=seed)
    if kind == "lesion":
        return pixels.dermoscopy(rows, cols, seed=seed)
    if kind.startswith("fundus"):
        return pixels.fundus(rows, cols, right_eye=kind.endswith("R"), seed=seed)
    return pixels.histology(rows, cols, stain=kind, seed=seed)


def _cached_grey(kind: str, rows: int, cols: int, frames: int, flag: bool, variant: int) -> Any:
    return _grey_image(kind, rows, cols, frames, flag, variant)


@lru_cache(maxsize=32)
def _grey_image(kind: str, rows: int, cols: int, frames: int, flag: bool, variant: int) -> Any:
    seed = _seed_of(kind, flag, variant)
    if kind == "angio":
        return pixels.angiogram(rows, cols, frames, right=flag, seed=seed)
    if kind == "fluoro":
        return pixels.fluoroscopy(rows, cols, frames, seed=seed)
    if kind == "oct":
        return pixels.oct_volume(rows, cols, frames, seed=seed)
    return pixels.mammogram(rows, cols, chest_wall_left=flag, seed=seed)


def _cross_sectional(ds: Dataset, study: _Study, series: _Series, index: int) -> None:
    modality = series.spec.modality
    stack, grid = _stack_plane(study, series, index)
    anatomy = _anatomy(study)
    seed = _seed_of(ds.SOPInstanceUID)
    normal = grid.normal_axis
    ds.FrameOfReferenceUID = study.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "FFS" if study.body_part in ("KNEE", "HIP") else "HFS"
    ds.ImageOrientationPatient = grid.orientation()
    ds.ImagePositionPatient = [round(v, 3) for v in grid.origin]
    ds.PixelSpacing = [round(grid.spacing, 4), round(grid.spacing, 4)]
    ds.SliceThickness = f"{stack.thickness:g}"
    if stack.look != "localizer":
        ds.SliceLocation = f"{grid.origin[normal]:.2f}"
    if modality == "CT":
        if stack.look == "localizer":
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            image = pixels.radiograph(anatomy, grid, seed=seed)
        else:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if stack.view == "axial" else "REFORMATTED"]
            image = pixels.ct_image(
                anatomy, grid, contrast=stack.look == "contrast", sharp=stack.look == "sharp", seed=seed
            )
        ds.KVP = "120"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        if stack.look == "localizer":
            _auto_window(ds, image.astype("float64") - 1024)
        else:
            ds.WindowCenter, ds.WindowWidth = f"{stack.window[0]:g}", f"{stack.window[1]:g}"
        _put_pixels(ds, image, bits=12)
    elif modality == "MR":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType = "2D"
        ds.MagneticFieldStrength = "1.5"
        ds.RepetitionTime, ds.EchoTime = {"T1": ("550", "12"), "FLAIR": ("9000", "120"), "DWI": ("4000", "80")}.get(
            stack.look, ("3000", "90")
        )
        ds.SpacingBetweenSlices = f"{(stack.extent[1] - stack.extent[0]) / len(series.instance_uids):.2f}"
        ds.WindowCenter, ds.WindowWidth = f"{_MR_WINDOW[0]:g}", f"{_MR_WINDOW[1]:g}"
        _put_pixels(ds, pixels.mr_image(anatomy, grid, stack.look, seed=seed), bits=12)
    else:  # PT
        ds.Units, ds.DecayCorrection = "BQML", "START"
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.SeriesType = ["WHOLE BODY", "IMAGE"]
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1.5"
        ds.ImageIndex = index + 1
        drug = Dataset()
        drug.Radiopharmaceutical = "Fluorodeoxyglucose"
        drug.RadionuclideTotalDose = "350000000"
        drug.RadionuclideHalfLife = "6586.2"
        ds.RadiopharmaceuticalInformationSequence = [drug]
        _put_pixels(ds, pixels.pet_image(anatomy, grid, seed=seed), bits=16)


def _projection_radiograph(ds: Dataset, study: _Study, series: _Series, index: int) -> None:
    modality = series.spec.modality
    full = 0 if study.full_size else 1
    seed = _seed_of(ds.SOPInstanceUID)
    if modality != "CR":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.KVP = "28" if modality == "MG" else "75"
    view = ds.get("ViewPosition", "AP")
    if modality == "MG":
        rows, cols = _SIZES["MG"][full]
        image = _cached_grey("mammo", rows, cols, 1, series.side == "L", (seed + index) % 3)
        spacing = 0.07 * 1280 / rows
        ds.PatientOrientation = (
            ["A", "R" if series.side == "L" else "L"] if view == "CC" else ["A", "FR" if series.side == "L" else "FL"]
        )
    else:
        anatomy = _anatomy(study)
        slab = (-1e4, 1e4)
        if modality == "CR":  # chest
            size = _SIZES["CR"][full]
            grid = pixels.plane("coronal", (0, 0, 1250), (430, 540), size)
        elif study.template.key == "dx_knees":
            size = _DX_SIZES[0][full]
            grid = pixels.plane("coronal", (0, 0, 480), (440, 350), size)
        elif view == "LL":  # lateral hip: through the study's side only
            size = _DX_SIZES[0][full]
            x = 100.0 if series.side == "L" else -100.0
            grid = pixels.plane("sagittal", (x, 0, 880), (300, 240), size)
            slab = (0.0, 400.0) if series.side == "L" else (-400.0, 0.0)
        else:  # AP pelvis
            size = _DX_SIZES[0][full]
            grid = pixels.plane("coronal", (0, 0, 890), (420, 336), size)
        image = _cached_radiograph(anatomy, grid, slab, seed)
        spacing = grid.spacing
        ds.PatientOrientation = ["P", "F"] if view == "LL" else ["L", "F"]
    ds.ImagerPixelSpacing = [round(spacing, 4), round(spacing, 4)]
    ds.PixelSpacing = [round(spacing, 4), round(spacing, 4)]
    _auto_window(ds, image)
    _put_pixels(ds, image, bits=12)


def _cached_radiograph(
    anatomy: tuple[pixels.Shape, ...], grid: pixels.Plane, slab: tuple[float, float], seed: int
) -> Any:
    import numpy as np

    base = _radiograph_base(anatomy, grid, slab)
    noise = np.random.default_rng(seed).normal(0.0, 14.0, base.shape)
    return np.clip(np.rint(base + noise), 0, 4095).astype(np.uint16)


@lru_cache(maxsize=16)
def _radiograph_base(anatomy: tuple[pixels.Shape, ...], grid: pixels.Plane, slab: tuple[float, float]) -> Any:
    return pixels.radiograph(anatomy, grid, seed=0, slab=slab).astype("float32")


def _nuclear_medicine(ds: Dataset, study: _Study, series: _Series, index: int) -> None:
    import numpy as np

    full = 0 if study.full_size else 1
    anatomy = _anatomy(study)
    seed = _seed_of(ds.SOPInstanceUID)
    ds.NumberOfEnergyWindows = 1
    window = Dataset()
    window_range = Dataset()
    window_range.EnergyWindowLowerLimit, window_range.EnergyWindowUpperLimit = "126", "154"
    window.EnergyWindowRangeSequence = [window_range]
    window.EnergyWindowName = "Tc99m"
    ds.EnergyWindowInformationSequence = [window]
    ds.NumberOfDetectors = 1
    drug = Dataset()
    drug.Radiopharmaceutical = "Tc-99m MDP"
    drug.RadionuclideTotalDose = "600"  # MBq
    ds.RadiopharmaceuticalInformationSequence = [drug]
    if series.spec.description.startswith("Flow"):
        rows, cols = _NM_DYNAMIC[full]
        grid = pixels.plane("coronal", (0, 0, 820), (500, 500), (rows, cols))
        frames = _nm_dynamic(anatomy, grid, seed)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "DYNAMIC", "EMISSION"]
        ds.add_new(0x00280009, "AT", [0x00540010, 0x00540020, 0x00540030])  # energy window, detector, phase
        n = frames.shape[0]
        ds.EnergyWindowVector = [1] * n
        ds.DetectorVector = [1] * n
        ds.PhaseVector = [1] * n
        ds.NumberOfPhases = 1
        phase = Dataset()
        phase.ActualFrameDuration = 2000  # ms
        phase.NumberOfFramesInPhase = n
        phase.PhaseDelay = 0
        phase.PauseBetweenFrames = 0
        ds.PhaseInformationSequence = [phase]
        ds.FrameTime = "2000"
        ds.PixelSpacing = [round(grid.spacing, 4)] * 2
        _put_pixels(ds, frames, bits=16, multi_frame=True)
        return
    rows, cols = _NM_WHOLE_BODY[full]
    grid = pixels.plane("coronal", (0, 0, 880), (640, 1780), (rows, cols))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    ds.add_new(0x00280009, "AT", [0x00540010, 0x00540020])  # energy window, detector
    ds.EnergyWindowVector = [1]
    ds.DetectorVector = [1]
    ds.PixelSpacing = [round(grid.spacing, 4)] * 2
    view = pixels.nm_view(anatomy, grid, "bone", counts=220.0 if full == 0 else 400.0, seed=seed)
    if index % 2:  # posterior: seen from behind
        view = np.ascontiguousarray(view[:, ::-1])
    ds.ImageComments = "Posterior" if index % 2 else "Anterior"
    _put_pixels(ds, view, bits=16, multi_frame=True)


def _nm_dynamic(anatomy: tuple[pixels.Shape, ...], grid: pixels.Plane, seed: int) -> Any:
    """Flow phase: the tracer reaches the arteries, then soft tissue, then starts to settle in bone."""
    import numpy as np

    vascular = pixels.projection(anatomy, grid, "vascular")
    bone = pixels.projection(anatomy, grid, "bone")
    vascular = pixels.smooth(vascular / (float(vascular.max()) or 1.0), 1)
    bone = pixels.smooth(bone / (float(bone.max()) or 1.0), 1)
    rng = np.random.default_rng(seed)
    out = np.empty((_NM_DYNAMIC_FRAMES, grid.rows, grid.cols), dtype=np.uint16)
    for f in range(_NM_DYNAMIC_FRAMES):
        t = f * 2.0
        arrival = 1.0 / (1.0 + np.exp(-(t - 12.0) / 2.5))
        expected = 60.0 * arrival * (vascular * (1.2 - 0.4 * t / 64) + bone * 0.5 * t / 64)
        out[f] = np.clip(rng.poisson(np.clip(expected, 0, None)), 0, 65535)
    return out


def _whole_slide(ds: Dataset, study: _Study, series: _Series, index: int) -> None:
    """One level of a TILED_FULL pyramid: instance 0 is the base (VOLUME), the next ones are halved."""
    import numpy as np
    from PIL import Image

    full = 0 if study.full_size else 1
    base_rows, base_cols = _SIZES["SM"][full]
    stain = "HE" if series.spec.description.startswith("H&E") else "IHC"
    base = _colour_image(stain, base_rows, base_cols, 0)
    level = index
    rows, cols = base_rows >> level, base_cols >> level
    image = base if level == 0 else np.asarray(Image.fromarray(base).resize((cols, rows), Image.Resampling.BOX))
    tiles_down, tiles_across = -(-rows // _TILE), -(-cols // _TILE)
    padded = np.full((tiles_down * _TILE, tiles_across * _TILE, 3), 244, dtype=np.uint8)
    padded[:rows, :cols] = image
    tiles = padded.reshape(tiles_down, _TILE, tiles_across, _TILE, 3).swapaxes(1, 2).reshape(-1, _TILE, _TILE, 3)
    base_spacing = 0.0005  # mm per pixel at the base: 20x
    spacing = base_spacing * (1 << level)
    ds.ImageType = ["ORIGINAL" if level == 0 else "DERIVED", "PRIMARY", "VOLUME", "NONE" if level == 0 else "RESAMPLED"]
    ds.FrameOfReferenceUID = study.frame_of_reference
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = rows, cols
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.ImagedVolumeWidth = round(base_cols * base_spacing, 4)
    ds.ImagedVolumeHeight = round(base_rows * base_spacing, 4)
    ds.ImagedVolumeDepth = 0.004
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = [origin]
    measures = Dataset()
    measures.PixelSpacing = [spacing, spacing]
    measures.SliceThickness = 0.004
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.SpecimenLabelInImage = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.ContainerIdentifier = f"H{study.date:%y}-{study.study_id}"
    specimen = Dataset()
    specimen.SpecimenIdentifier = f"{ds.ContainerIdentifier}-A1"
    # Keyed on the series UID, which already depends on the seed: every level shows the same specimen.
    specimen.SpecimenUID = _uid(0, f"{series.uid}/specimen")
    specimen.SpecimenShortDescription = "H&E" if stain == "HE" else "IHC"
    ds.SpecimenDescriptionSequence = [specimen]
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    ds.OpticalPathSequence = [path]
    _put_pixels(ds, tiles, bits=8, multi_frame=True)


def _seg_source(study: _Study, refs: Sequence[tuple[_Series, str]]) -> tuple[_Series, str, Any]:
    """The image a segmentation is drawn on (the cross-section showing most of the tumour; else the
    last image) and its mask (the tumour where the image shows it; else a disc in the middle)."""
    import numpy as np

    best: tuple[int, _Series, str, Any] | None = None
    tumour = pixels.TISSUES.index("tumour")
    for series, uid in refs:
        if series.spec.modality not in _CROSS_SECTIONAL:
            continue
        stack = _STACKS[(study.template.key, series.spec.description)]
        if stack.look == "localizer":
            continue
        _, grid = _stack_plane(study, series, series.instance_uids.index(uid))
        mask = pixels.tissue_slice(_anatomy(study), grid) == tumour
        if best is None or int(mask.sum()) > best[0]:
            best = (int(mask.sum()), series, uid, mask)
    if best is not None and best[0] > 0:
        return best[1], best[2], best[3]
    series, uid = refs[-1]
    size = _SIZES.get(series.spec.modality, ((8, 8), (8, 8)))[0 if study.full_size else 1]
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    mask = (yy - size[0] / 2) ** 2 + (xx - size[1] / 2) ** 2 <= (min(size) / 10) ** 2
    return series, uid, mask


def _binary_mask(mask: Any) -> bytes:
    import numpy as np

    # DICOM packs 1-bit pixels little end first: pixel 0 in bit 0.
    packed = np.packbits(np.asarray(mask, dtype=np.uint8).ravel(), bitorder="little").tobytes()
    return packed + b"\x00" * (len(packed) % 2)


def _image_refs(study: _Study, trust: str) -> list[tuple[_Series, str]]:
    return [
        (s, uid)
        for s in study.series
        if trust in s.holders and s.spec.modality not in _NON_IMAGE
        for uid in s.instance_uids
    ]


def _evidence(study: _Study, refs: Sequence[tuple[_Series, str]]) -> Dataset:
    item = Dataset()
    item.StudyInstanceUID = study.uid
    series_items = []
    by_series: dict[str, list[Dataset]] = {}
    for series, uid in refs:
        by_series.setdefault(series.uid, []).append(_sop_ref(series, uid))
    for series_uid, sops in by_series.items():
        entry = Dataset()
        entry.SeriesInstanceUID = series_uid
        entry.ReferencedSOPSequence = sops
        series_items.append(entry)
    item.ReferencedSeriesSequence = series_items
    return item


def _sop_ref(series: _Series, uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = SOP_CLASS_BY_MODALITY[series.spec.modality]
    ref.ReferencedSOPInstanceUID = uid
    return ref


def _sr_document(ds: Dataset, study: _Study, trust: str, *, key_objects: bool) -> None:
    """Comprehensive SR report, or a KOS ("Of Interest") pointing at key images."""
    refs = _image_refs(study, trust)
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.CurrentRequestedProcedureEvidenceSequence = [_evidence(study, refs)]
    template = Dataset()
    template.MappingResource = "DCMR"
    if key_objects:
        template.TemplateIdentifier = "2010"
        ds.ConceptNameCodeSequence = [_code("113000", "DCM", "Of Interest")]
        description = _text_item("113012", "DCM", "Key Object Description", "Key images for the orthopaedic clinic")
        images = [_image_item(series, uid) for series, uid in refs[:2]]
        ds.ContentSequence = [description, *images]
    else:
        template.TemplateIdentifier = "2000"
        predecessor = _uid(0, f"{study.uid}/predecessor-report")
        tid2000_content(ds, study.uid, study.reader, predecessor, _code, _text_item)
    ds.ContentTemplateSequence = [template]


def _text_item(value: str, scheme: str, meaning: str, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_code(value, scheme, meaning)]
    item.TextValue = text
    return item


def _image_item(series: _Series, uid: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "IMAGE"
    item.ReferencedSOPSequence = [_sop_ref(series, uid)]
    return item


def _presentation_state(ds: Dataset, study: _Study, trust: str) -> None:
    refs = _image_refs(study, trust)
    ds.ContentLabel = "TEMPLATING"
    ds.ContentDescription = "Hip arthroplasty templating measurements"
    ds.ContentCreatorName = study.reader
    ds.PresentationCreationDate = study.date.strftime("%Y%m%d")
    ds.PresentationCreationTime = study.time
    referenced = Dataset()
    referenced.SeriesInstanceUID = refs[0][0].uid
    referenced.ReferencedImageSequence = [_sop_ref(s, uid) for s, uid in refs]
    ds.ReferencedSeriesSequence = [referenced]
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = "2048", "4096"
    ds.SoftcopyVOILUTSequence = [voi]
    ds.PresentationLUTShape = "IDENTITY"
    layer = Dataset()
    layer.GraphicLayer = "MEASUREMENTS"
    layer.GraphicLayerOrder = 1
    ds.GraphicLayerSequence = [layer]
    text = Dataset()
    text.UnformattedTextValue = "Cup 52 mm, stem size 4"
    text.AnchorPointAnnotationUnits = "PIXEL"
    text.AnchorPoint = [4.0, 4.0]
    text.AnchorPointVisibility = "N"
    annotation = Dataset()
    annotation.GraphicLayer = "MEASUREMENTS"
    annotation.ReferencedImageSequence = [_sop_ref(s, uid) for s, uid in refs[:1]]
    annotation.TextObjectSequence = [text]
    ds.GraphicAnnotationSequence = [annotation]


def _segmentation(ds: Dataset, study: _Study, trust: str) -> None:
    refs = _image_refs(study, trust)
    source, source_uid, mask = _seg_source(study, refs)
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.ContentLabel = "TUMOUR"
    ds.ContentDescription = "Target lesion"
    ds.ContentCreatorName = study.reader
    ds.SegmentationType = "BINARY"
    ds.FrameOfReferenceUID = study.frame_of_reference
    ds.ManufacturerModelName = "GM Oncology Contouring"
    ds.DeviceSerialNumber = "GMDEMO-1"
    ds.SoftwareVersions = "1.0"
    ds.LossyImageCompression = "00"
    segment = Dataset()
    segment.SegmentNumber = 1
    segment.SegmentLabel = "Tumour"
    segment.SegmentAlgorithmType = "MANUAL"
    segment.SegmentedPropertyCategoryCodeSequence = [_code("49755003", "SCT", "Morphologically Altered Structure")]
    segment.SegmentedPropertyTypeCodeSequence = [_code("108369006", "SCT", "Tumor")]
    ds.SegmentSequence = [segment]
    referenced = Dataset()
    referenced.SeriesInstanceUID = source.uid
    referenced.ReferencedInstanceSequence = [_sop_ref(source, source_uid)]
    ds.ReferencedSeriesSequence = [referenced]
    frame = Dataset()
    identification = Dataset()
    identification.ReferencedSegmentNumber = 1
    frame.SegmentIdentificationSequence = [identification]
    derivation = Dataset()
    derivation.SourceImageSequence = [_sop_ref(source, source_uid)]
    frame.DerivationImageSequence = [derivation]
    ds.PerFrameFunctionalGroupsSequence = [frame]
    ds.Rows, ds.Columns = mask.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = 1
    ds.add_new(0x7FE00010, "OB", _binary_mask(mask))


# SCP-ECG lead codes (MDC-equivalent), in standard 12-lead order.
_ECG_LEADS = (
    ("5.6.3-9-1", "Lead I"),
    ("5.6.3-9-2", "Lead II"),
    ("5.6.3-9-61", "Lead III"),
    ("5.6.3-9-62", "aVR"),
    ("5.6.3-9-63", "aVL"),
    ("5.6.3-9-64", "aVF"),
    ("5.6.3-9-3", "Lead V1"),
    ("5.6.3-9-4", "Lead V2"),
    ("5.6.3-9-5", "Lead V3"),
    ("5.6.3-9-6", "Lead V4"),
    ("5.6.3-9-7", "Lead V5"),
    ("5.6.3-9-8", "Lead V6"),
)


def _channel(source: Dataset, sensitivity: str, unit: tuple[str, str]) -> Dataset:
    channel = Dataset()
    channel.ChannelSourceSequence = [source]
    channel.ChannelSensitivity = sensitivity
    channel.ChannelSensitivityUnitsSequence = [_code(unit[0], "UCUM", unit[1])]
    channel.ChannelSampleSkew = "0"
    channel.WaveformBitsStored = 16
    return channel


_ECG_SECONDS = 10.0
_ECG_RATE_HZ = 500
_HD_RATE_HZ = 250
_MICROVOLTS_PER_COUNT = 2.5  # ECG channel sensitivity


def _waveform(ds: Dataset, study: _Study, modality: str) -> None:
    """Ten seconds of 12-lead resting ECG at 500 Hz, or of ECG lead II and aortic pressure at 250 Hz
    (haemodynamics): sinus rhythm drawn by tools/demo/pixels.py."""
    import numpy as np

    seed = _seed_of(ds.SOPInstanceUID)
    if modality == "ECG":
        sources = [_code(v, "SCPECG", m) for v, m in _ECG_LEADS]
        channels = [_channel(s, f"{_MICROVOLTS_PER_COUNT:g}", ("uV", "microvolt")) for s in sources]
        traces = pixels.ecg_12_lead(_ECG_SECONDS, _ECG_RATE_HZ, seed=seed) / _MICROVOLTS_PER_COUNT
        frequency, label = _ECG_RATE_HZ, "RHYTHM"
    else:
        # Local code for the pressure channel: a deliberate shortcut, see module notes.
        pressure = _code("AOP", "99GMDEMO", "Aortic pressure")
        channels = [
            _channel(_code("5.6.3-9-2", "SCPECG", "Lead II"), "5", ("uV", "microvolt")),
            _channel(pressure, "0.1", ("mm[Hg]", "mmHg")),
        ]
        lead, aortic = pixels.arterial_pressure(_ECG_SECONDS, _HD_RATE_HZ, seed=seed)
        traces = np.stack([lead / 5.0, aortic / 0.1])
        frequency, label = _HD_RATE_HZ, "HEMODYNAMIC"
    samples = traces.shape[1]
    interleaved = np.clip(np.rint(traces.T), -32768, 32767).astype("<i2")  # sample by sample, channel by channel
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(channels)
    group.NumberOfWaveformSamples = samples
    group.SamplingFrequency = str(frequency)
    group.MultiplexGroupLabel = label
    group.ChannelDefinitionSequence = channels
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.add_new(0x54001010, "OW", interleaved.tobytes())
    ds.WaveformSequence = [group]
    ds.AcquisitionDateTime = f"{study.date:%Y%m%d}{study.time}"
    ds.AcquisitionContextSequence = []


def _tiny_pdf(lines: Sequence[str]) -> bytes:
    """A one-page PDF 1.4 with a correct xref table (readers reject wrong offsets)."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    shown = " ".join(f"({escape(line)}) '" for line in lines)
    content = f"BT /F1 11 Tf 50 790 Td 16 TL {shown} ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref_at,
    )
    return bytes(out)


def _encapsulated_pdf(ds: Dataset, study: _Study, trust: Trust) -> None:
    title = pdf_report_title(study.description)
    pdf = _tiny_pdf(
        pdf_report_lines(
            study.template.key,
            trust_name=trust.name,
            description=study.description,
            date=f"{study.date:%d/%m/%Y}",
            accession=study.accession,
            indication=study.reason,
            author=study.reader.replace("^^Dr", "").replace("^", " "),
        )
    )
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = []
    ds.AcquisitionDateTime = f"{study.date:%Y%m%d}{study.time}"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    # OB values must have even length; the true length is in EncapsulatedDocumentLength.
    ds.add_new(0x00420011, "OB", pdf + b"\x00" * (len(pdf) % 2))


def _instance_layer(study: _Study, series: _Series, trust: Trust, index: int) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = series.instance_uids[index]
    ds.InstanceNumber = index + 1
    modality = series.spec.modality
    if modality in ("ECG", "HD"):
        _waveform(ds, study, modality)
    elif modality in ("SR", "KO"):
        _sr_document(ds, study, trust.id, key_objects=modality == "KO")
    elif modality == "PR":
        _presentation_state(ds, study, trust.id)
    elif modality == "SEG":
        _segmentation(ds, study, trust.id)
    elif modality == "DOC":
        _encapsulated_pdf(ds, study, trust)
    else:
        _image(ds, study, series, index)
    return ds


def _explicit_le_buffer() -> DicomBytesIO:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    return buffer


def _encode_layer(ds: Dataset, encodings: list[str]) -> dict[int, bytes]:
    """Each element's Explicit VR Little Endian bytes, keyed by tag.

    pydicom's own element writer does the encoding (including sequences and the
    character set); an ambiguous VR would raise here rather than be guessed.
    """
    buffer = _explicit_le_buffer()
    spans = []
    for element in ds:
        start = buffer.tell()
        write_data_element(buffer, element, encodings)
        spans.append((int(element.tag), start, buffer.tell()))
    data = buffer.getvalue()
    return {tag: data[start:end] for tag, start, end in spans}


def _file_meta(sop_class: str, sop_uid: str) -> bytes:
    """The File Meta Information group, written by pydicom (group length included)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dicom_uid.UID(sop_class)
    meta.MediaStorageSOPInstanceUID = dicom_uid.UID(sop_uid)
    meta.TransferSyntaxUID = dicom_uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = dicom_uid.UID(_IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    buffer = _explicit_le_buffer()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


def _part10(sop_class: str, sop_uid: str, layers: Sequence[dict[int, bytes]]) -> bytes:
    """Preamble, file meta and the merged layers in ascending tag order."""
    merged: dict[int, bytes] = {}
    for layer in layers:
        merged.update(layer)
    if len(merged) != sum(len(layer) for layer in layers):
        raise ValueError(f"an attribute is set in two layers of {sop_uid}")
    body = b"".join(merged[tag] for tag in sorted(merged))
    return b"\x00" * 128 + b"DICM" + _file_meta(sop_class, sop_uid) + body


# --------------------------------------------------------------------------- output


def _write_study(out_dir: Path, study: _Study) -> tuple[int, int]:
    files = size = 0
    for trust_id in study.trusts:
        trust = TRUSTS_BY_ID[trust_id]
        encodings = convert_encodings(_charset(study.patient, trust_id) or default_encoding)
        study_layer = _encode_layer(_study_layer(study, trust), encodings)
        for series in study.series:
            if trust_id not in series.holders:
                continue
            series_layer = _encode_layer(_series_layer(study, series), encodings)
            sop_class = SOP_CLASS_BY_MODALITY[series.spec.modality]
            folder = out_dir / trust_id / study.uid / series.uid
            folder.mkdir(parents=True, exist_ok=True)
            for index, sop_uid in enumerate(series.instance_uids):
                instance = _encode_layer(_instance_layer(study, series, trust, index), encodings)
                data = _part10(sop_class, sop_uid, (study_layer, series_layer, instance))
                (folder / f"{sop_uid}.dcm").write_bytes(data)
                files, size = files + 1, size + len(data)
    return files, size


def _study_entry(study: _Study) -> StudyEntry:
    owner = study.trusts[0]
    holdings = {
        t: {
            "series": sum(1 for s in study.series if t in s.holders),
            "instances": sum(len(s.instance_uids) for s in study.series if t in s.holders),
        }
        for t in study.trusts
    }
    return StudyEntry(
        study_uid=study.uid,
        trusts=list(study.trusts),
        modalities=sorted({s.spec.modality for s in study.series}),
        accession=study.accession,
        study_date=_study_date(study),
        study_time=_study_time(study, owner),
        timezone_offset=_utc_offset(study.date) if _PROFILES[owner].timezone else None,
        description=None if study.quirk == "missing_description_and_time" else study.description,
        number_of_series=len(study.series),
        number_of_instances=sum(len(s.instance_uids) for s in study.series),
        holdings=holdings,
    )


def _patient_entry(patient: _Patient, studies: Sequence[_Study]) -> PatientEntry:
    held = {t for s in studies for t in s.trusts}
    return PatientEntry(
        nhs_number=patient.nhs_number,
        name=patient.name,
        birth_date=patient.birth_date.strftime("%Y%m%d"),
        sex=patient.sex,
        trusts=[t.id for t in TRUSTS if t.id in held],
        local_ids=dict(sorted(patient.local_ids.items())),
        studies=[_study_entry(s) for s in studies],
    )


def _specialty_study(studies: Sequence[_Study], shared: _Study, modality: str) -> str:
    """A plain example study for a modality: led by it if possible, no special case."""
    ordinary = [s for s in studies if s is not shared and s.quirk is None]
    led = [
        s
        for s in ordinary
        if s.series[0].spec.modality == modality and s.template.modalities() <= {modality} | _NON_IMAGE
    ]
    holding = [s for s in ordinary if any(x.spec.modality == modality for x in s.series)]
    return (led or holding)[0].uid


def _facts(plan: _Plan) -> dict[str, Any]:
    patients = plan.patients
    everything = [s for p in patients for s in plan.studies[p.index]]
    multi = patients[_P_MULTI_TRUST]
    multi_trusts = sorted({t for s in plan.studies[multi.index] for t in s.trusts})
    conflict = patients[_P_CONFLICT]
    odd = {
        s.uid: {"issue": issue, "attribute": attribute, "value": value, "trust": s.trusts[0]}
        for s in everything
        for issue, attribute, value in _QUIRKS
        if s.quirk == issue
    }
    specialty = {m: _specialty_study(everything, plan.shared, m) for m in SPECIALTY_MODALITIES}
    return {
        "shared_study": {
            "study_uid": plan.shared.uid,
            "nhs_number": plan.shared.patient.nhs_number,
            "trusts": list(plan.shared.trusts),
            "source_trust": plan.shared.trusts[0],
            "extra_series_trust": "christie",
            "extra_series_uid": plan.shared_extra.uid,
        },
        "multi_trust_patient": {
            "nhs_number": multi.nhs_number,
            "trusts": {
                t: {
                    "identity": TRUSTS_BY_ID[t].identity,
                    "patient_id": multi.local_ids.get(t, multi.nhs_number),
                    "issuer": "NHS" if TRUSTS_BY_ID[t].identity == "nhs" else TRUSTS_BY_ID[t].ods_code,
                }
                for t in multi_trusts
            },
        },
        "non_ascii_patients": [
            {"nhs_number": p.nhs_number, "name": p.name, "specific_character_set": p.charset}
            for p in patients
            if p.charset
        ],
        "odd_data_studies": odd,
        "odd_data_by_issue": {v["issue"]: uid for uid, v in odd.items()},
        "specialty_studies": specialty,
        "full_size_studies": sorted(s.uid for s in everything if s.full_size),
        "demographic_conflict": {
            "nhs_number": conflict.nhs_number,
            "canonical_birth_date": conflict.birth_date.strftime("%Y%m%d"),
            "birth_dates": {
                t: conflict.birth_date_by_trust.get(t, conflict.birth_date).strftime("%Y%m%d")
                for t in plan.conflict_trusts
            },
        },
        "sex_other_patient": patients[_P_SEX_OTHER].nhs_number,
        "charset_by_trust": {t.id: _PROFILES[t.id].charset for t in TRUSTS},
        "uppercase_name_trusts": [t.id for t in TRUSTS if _PROFILES[t.id].upper_names],
        "timezone_offset_trusts": [t.id for t in TRUSTS if _PROFILES[t.id].timezone],
        "local_procedure_coding_trusts": [t.id for t in TRUSTS if _PROFILES[t.id].local_coding],
    }


def _write_xref(out_dir: Path, patients: Sequence[_Patient]) -> int:
    rows = sorted(
        (p.nhs_number, trust, local, TRUSTS_BY_ID[trust].ods_code)
        for p in patients
        for trust, local in p.local_ids.items()
    )
    with (out_dir / XREF_NAME).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(XREF_HEADER)
        writer.writerows(rows)
    return len(rows)


def _clear_previous(out_dir: Path) -> None:
    # Only our own outputs are removed, so stale files from another seed cannot
    # survive; anything else in out_dir is left alone.
    for trust in TRUSTS:
        if (out_dir / trust.id).is_dir():
            shutil.rmtree(out_dir / trust.id)
    for name in (MANIFEST_NAME, XREF_NAME):
        (out_dir / name).unlink(missing_ok=True)


def generate(out_dir: Path, *, seed: int = DEFAULT_SEED, progress: TextIO | None = None) -> Manifest:
    """Write the demo dataset under ``out_dir`` and return its manifest.

    A previous dataset there (the eight trust folders, xref.csv, manifest.json) is
    replaced; anything else in ``out_dir`` is left alone. With ``progress``, a line per
    tenth of the studies written goes there (studies, files, megabytes, seconds).
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    plan = _plan(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous(out_dir)
    files = size = done = 0
    total = sum(len(studies) for studies in plan.studies.values())
    for patient in plan.patients:
        for study in plan.studies[patient.index]:
            n, b = _write_study(out_dir, study)
            files, size, done = files + n, size + b, done + 1
            if progress is not None and (done * 10 // total != (done - 1) * 10 // total or done == total):
                print(
                    f"demo data: {done}/{total} studies, {files} files, {size / 1e6:.0f} MB, "
                    f"{time.perf_counter() - started:.0f} s",
                    file=progress,
                    flush=True,
                )
    xref_rows = _write_xref(out_dir, plan.patients)
    patients = [_patient_entry(p, plan.studies[p.index]) for p in plan.patients]
    manifest = Manifest(
        seed=seed,
        trusts=[asdict(t) for t in TRUSTS],
        counts={
            "patients": len(patients),
            "studies": sum(len(p.studies) for p in patients),
            "files": files,
            "bytes": size,
            "xref_rows": xref_rows,
        },
        patients=patients,
        facts=_facts(plan),
    )
    # Written last: its presence means the dataset is complete (see ensure_demo_data).
    (out_dir / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def dataset_version(out_dir: Path) -> int | None:
    """The generator version of the dataset in ``out_dir`` (None: none there, or unreadable)."""
    try:
        manifest = json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("generator_version", 1) if isinstance(manifest, dict) else None
    return version if isinstance(version, int) else None


def ensure_demo_data(out_dir: Path, *, seed: int = DEFAULT_SEED) -> bool:
    """Generate unless ``out_dir`` holds a dataset of this generator version; True when it
    generated (progress on stderr)."""
    if dataset_version(Path(out_dir)) == GENERATOR_VERSION:
        return False
    generate(Path(out_dir), seed=seed, progress=sys.stderr)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    manifest = generate(args.out_dir, seed=args.seed, progress=sys.stderr)
    counts = manifest.counts
    print(
        f"Generated {counts['patients']} patients, {counts['studies']} studies, "
        f"{counts['files']} files ({counts['bytes'] / 1e6:.1f} MB) in {args.out_dir} "
        f"(seed {args.seed}, {time.perf_counter() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
