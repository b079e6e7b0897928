"""MIMIC report sectioning: the official rules users rely on to get the same findings/impression."""

from __future__ import annotations

from prep_fixtures import mimic_report

from datamodules.sources.report_sections import extract_sections, normalise_section_name, split_sections


def test_findings_and_impression_of_a_templated_report():
    text = mimic_report("The heart is normal.  No effusion.", "No acute cardiopulmonary process.")
    sections = extract_sections(text)
    assert sections.findings == "The heart is normal. No effusion."
    assert sections.impression == "No acute cardiopulmonary process."
    assert sections.conclusion == sections.impression
    assert [name for name, _ in split_sections(text)][0] == "preamble"


def test_header_variants_are_normalised():
    assert normalise_section_name("CONCLUSION") == "impression"
    assert normalise_section_name("FINDINGS AND IMPRESSION") == "impression"
    assert normalise_section_name("IMPRESSON") == "impression"
    assert normalise_section_name("COMPARISONS") == "comparison"
    assert normalise_section_name("CHEST, PA AND LATERAL") == "findings"
    assert normalise_section_name("PORTABLE AP UPRIGHT CHEST RADIOGRAPH") == "findings"
    assert normalise_section_name("REASON FOR EXAM") == "indication"
    assert normalise_section_name("WET READ") == "wet read"


def test_last_occurrence_wins_and_empty_sections_are_dropped():
    text = (
        " FINAL REPORT\n IMPRESSION:  First read.\n \n FINDINGS:\n \n"
        " IMPRESSION:  Second read.\n CONCLUSION:  Final impression.\n"
    )
    sections = extract_sections(text)
    assert sections.impression == "Final impression."
    assert sections.findings is None  # the empty FINDINGS header is dropped


def test_last_paragraph_fallback_without_findings_or_impression():
    text = " FINAL REPORT\n INDICATION:  Cough.\n \n Lungs are clear.  No pneumothorax.\n"
    sections = extract_sections(text)
    assert sections.findings is None and sections.impression is None
    assert sections.last_paragraph == "Lungs are clear. No pneumothorax."
    assert sections.conclusion == "Lungs are clear. No pneumothorax."


def test_comparison_is_the_last_resort_and_headerless_text_is_unusable():
    only_comparison = extract_sections(" FINAL REPORT\n COMPARISON:  Small effusion, stable since ___.\n")
    assert only_comparison.conclusion == "Small effusion, stable since ___."
    assert extract_sections("just one line without any header").conclusion == ""


def test_header_on_the_line_after_a_header():
    sections = extract_sections(" FINDINGS:\n IMPRESSION:  Edema.\n")
    assert sections.impression == "Edema."
