"""The text pipeline after the engine (app/text/): each step on its own, per language, and in order.

Every step has cases that must change and cases that must stay exactly as the engine wrote them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.errors import UserError
from app.text import TextOptions, finish
from app.text.fillers import remove_fillers
from app.text.punctuation import spoken_punctuation
from app.text.replacements import apply_replacements, check_replacements
from app.text.spacing import tidy
from app.text.vocabulary import correct

VOCABULARY = ["Kubernetes", "Elasticsearch", "Nguyen", "PostgreSQL", "Jupyter", "Terraform", "Nginx", "Ansible", "Dvořák", "Grafana"]


# ---- vocabulary correction ----------------------------------------------------------------------
@pytest.mark.parametrize("heard, meant", [
    ("I deployed it on cuber netties today.", "I deployed it on Kubernetes today."),
    ("Kubernetis and Postgres SQL", "Kubernetes and PostgreSQL"),
    ("We use postgres Q L.", "We use PostgreSQL."),
    ("Open the Jupiter notebook.", "Open the Jupyter notebook."),
    ("Terra form the planet.", "Terraform the planet."),
    ("The engine x server is down.", "The Nginx server is down."),
    ("kubernetes is great", "Kubernetes is great"),  # same letters, the entry's spelling
    ("Dvorak wrote it.", "Dvořák wrote it."),
    ("Deploy it on Kubernetes and on cuber netties.", "Deploy it on Kubernetes and on Kubernetes."),
    ("every query to elastic search", "every query to Elasticsearch"),
])
def test_vocabulary_corrects_what_sounds_like_an_entry(heard, meant):
    assert correct(heard, VOCABULARY, "en") == meant


@pytest.mark.parametrize("text", [
    "The cabinets are full of governance papers.",  # "cabinets" sounds a bit like Kubernetes
    "Answer the question in a sensible way.",  # "in a sensible" is near "Ansible"
    "It is a sensible plan.",
    "When will you win?",  # "win" is near "Nguyen" but short
    "Look at the graph on a dashboard.",
    "The government is on the go.",
    "Read the post, then the gross total.",
])
def test_vocabulary_keeps_ordinary_words(text):
    assert correct(text, VOCABULARY, "en") == text


def test_vocabulary_never_spans_a_sentence_end_or_a_line_break():
    entries = ["Redis", "Kubernetes", "Node.js"]
    for text in ("I like red. Is that ok?", "The car is red, is it?", "red\nis", "cuber, netties"):
        assert correct(text, entries, "en") == text
    assert correct("We use node.js and cuber netties.", entries, "en") == "We use Node.js and Kubernetes."


@pytest.mark.parametrize("heard, entry, meant", [
    ("I use .net every day.", ".NET", "I use .NET every day."),  # was "I use ..NET every day."
    ("I write c# and C++ code.", "C#", "I write C# and C++ code."),  # was "C##"
    ("I love C++ a lot.", "C++", "I love C++ a lot."),  # was "C++++"
    ("I got a C in maths.", "C#", "I got a C in maths."),  # was "a C# in maths"
    ("It fell into the net.", ".NET", "It fell into the net."),
])
def test_vocabulary_entries_with_marks_are_written_once(heard, entry, meant):
    assert correct(heard, [entry], "en") == meant


def test_vocabulary_other_latin_languages_use_spelling_only():
    assert correct("Wir nutzen Kubernetis im Betrieb.", VOCABULARY, "de") == "Wir nutzen Kubernetes im Betrieb."
    # Sound-alike but spelled apart: English would correct it, German (no phonetic key) does not.
    assert correct("Wir nutzen cuber netties.", VOCABULARY, "de") == "Wir nutzen cuber netties."
    assert correct("Le cabinet est fermé.", VOCABULARY, "fr") == "Le cabinet est fermé."
    assert correct("Usamos postgresql y Grafana.", VOCABULARY, "es") == "Usamos PostgreSQL y Grafana."


def test_vocabulary_leaves_hindi_and_mandarin_alone():
    assert correct("我们用库伯内蒂斯", ["Kubernetes"], "zh") == "我们用库伯内蒂斯"
    assert correct("kubernetes", ["Kubernetes"], "hi") == "kubernetes"


def test_vocabulary_empty_list_changes_nothing():
    assert correct("cuber netties", [], "en") == "cuber netties"
    assert correct("cuber netties", ["  ", ""], "en") == "cuber netties"


# ---- replacements ---------------------------------------------------------------------------------
def test_replacements_whole_words_case_insensitive_in_order():
    pairs = [("at sign", "@"), ("my email", "ana@example.org"), ("ana@example.org", "ANA")]
    assert apply_replacements("Write to My Email now", pairs[:2]) == "Write to ana@example.org now"
    assert apply_replacements("Write to my email", pairs) == "Write to ANA"  # a later pair sees an earlier one
    assert apply_replacements("ana at  sign example", pairs[:1]) == "ana @ example"
    assert apply_replacements("the batsign and at signage stay", pairs[:1]) == "the batsign and at signage stay"


def test_replacements_in_mandarin_and_hindi_respect_their_words():
    """Mandarin has no spaces between words: a replacement never applied inside a sentence. Devanagari's vowel
    signs are no word characters to re: "है" (is) was replaced inside "हैं" (are), leaving a stray sign on the new word."""
    assert apply_replacements("我用微信发给你。", [("微信", "WeChat")]) == "我用WeChat发给你。"
    assert apply_replacements("我用python写代码", [("python", "Python")]) == "我用Python写代码"
    assert apply_replacements("wxpython", [("python", "Python")]) == "wxpython"
    assert apply_replacements("वे घर में हैं। यह अच्छा है।", [("है", "था")]) == "वे घर में हैं। यह अच्छा था।"


def test_replacement_text_is_literal():
    assert apply_replacements("costs dollar sign", [("dollar sign", r"$\1\g<0>")]) == r"costs $\1\g<0>"


def test_an_address_a_replacement_writes_at_a_sentence_start_is_not_capitalised():
    """"My email." was pasted as "Ana@example.org.": the written side is literal text."""
    options = TextOptions(replacements=(("my email", "ana@example.org"), ("my site", "https://example.org/me"),
                                        ("brb", "be right back")))
    assert finish("My email.", "en", options) == "ana@example.org."
    assert finish("Hello. my site is new.", "en", options) == "Hello. https://example.org/me is new."
    assert finish("BRB.", "en", options) == "Be right back."  # words are still capitalised


def test_check_replacements_names_the_malformed_entry():
    assert check_replacements([["at sign", "@"], ("  new  york ", "NYC")]) == (("at sign", "@"), ("new york", "NYC"))
    with pytest.raises(UserError, match="Replacement 2 has no spoken words"):
        check_replacements([["a", "b"], ["  ", "x"]])
    with pytest.raises(UserError, match="Replacement 1 must be a pair"):
        check_replacements([["only one"]])
    with pytest.raises(UserError, match="list of"):
        check_replacements("at sign=@")


# ---- fillers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("language, raw, clean", [
    ("en", "Um, I think, uh, we should go.", "I think, we should go."),
    ("en", "So, um, yes.", "So, yes."),
    ("en", "We should, erm.", "We should."),
    ("de", "Äh, ich glaube, ähm, das ist gut.", "Ich glaube, das ist gut."),
    ("fr", "Euh, je pense que oui.", "Je pense que oui."),
    ("es", "Eh, este, no sé.", "No sé."),
    ("es", "Bueno, este, no sé.", "Bueno, no sé."),
    ("es", "Sí. Este... no sé.", "Sí. No sé."),
])
def test_fillers_removed_per_language(language, raw, clean):
    assert tidy(remove_fillers(raw, language), language) == clean


@pytest.mark.parametrize("language, text", [
    ("en", "The umbrella and the user erred."),  # fillers inside words stay
    ("es", "Este libro es bueno."),  # "este" is "this" unless followed by a pause
    ("es", "Vivo en el este, cerca del mar."),  # "east": was "Vivo en el cerca del mar."
    ("es", "Me gusta este, no aquel."),  # "this one", followed by a comma but inside the clause
    ("es", "Al oeste, el mar."),
    ("de", "Ähnlich wie Öhringen."),
    ("en", "Euh is French, äh is German."),  # only the transcript language's list applies
])
def test_fillers_keep_real_words(language, text):
    assert remove_fillers(text, language) == text


@pytest.mark.parametrize("language, raw, clean", [
    ("en", "Um.", ""),  # a dictation of only a filler pastes nothing, not "."
    ("en", "Hmm, hmm.", ""),
    ("en", "Um? Yes.", "Yes."),
    ("en", "Um. So I think.", "So I think."),
    ("en", "I see. Um. Yes.", "I see. Yes."),  # not "I see.. Yes."
    ("en", "Um, so. Uh.", "So."),
    ("en", "A line.\nUm.\nNext", "A line.\nNext"),
    ("de", "Äh.", ""),
    ("fr", "Euh ?", ""),
    ("es", "Eh.", ""),
])
def test_a_filler_sentence_goes_with_its_full_stop(language, raw, clean):
    assert finish(raw, language, TextOptions()) == clean


@pytest.mark.parametrize("text", ["Uh-oh, the build failed.", "Uh-huh, that works.", "Mm-hmm, right.", "I said um-hmm."])
def test_fillers_joined_to_a_word_stay(text):
    assert finish(text, "en", TextOptions()) == text  # not "-oh, the build failed."


# ---- spoken punctuation ----------------------------------------------------------------------------
@pytest.mark.parametrize("language, raw, written", [
    ("en", "Hello comma how are you question mark", "Hello, how are you?"),
    ("en", "Hello, comma, how are you? Question mark.", "Hello, how are you?"),  # the model's own marks absorbed
    ("en", "Dear Anna new line thanks for the note period new paragraph bye", "Dear Anna\nThanks for the note.\n\nBye"),
    ("en", "It works exclamation point", "It works!"),
    ("de", "Hallo Komma wie geht es Fragezeichen neue Zeile Tschüss", "Hallo, wie geht es?\nTschüss"),
    ("fr", "Bonjour virgule ça va point d'interrogation", "Bonjour, ça va ?"),
    ("fr", "Voici la liste deux-points pommes point-virgule poires point final", "Voici la liste : pommes ; poires."),
    ("es", "Hola coma qué tal signo de interrogación nuevo párrafo adiós punto", "Hola, qué tal?\n\nAdiós."),
])
def test_spoken_punctuation_per_language(language, raw, written):
    assert finish(raw, language, TextOptions(spoken_punctuation=True, remove_fillers=False)) == written


def test_spoken_punctuation_off_by_default_keeps_the_words():
    text = "The trial period ended with a comma and a new line."
    assert TextOptions().spoken_punctuation is False
    assert finish(text, "en", TextOptions()) == text


def test_spoken_punctuation_needs_whole_words():
    assert spoken_punctuation("Commander Periodic", "en") == "Commander Periodic"
    assert spoken_punctuation("dictated in Mandarin", "zh") == "dictated in Mandarin"


@pytest.mark.parametrize("language, text", [
    ("en", "Export it as comma-separated values."),  # was "Export it as,-separated values."
    ("en", "A period-appropriate dress."),
    ("de", "Eine Punkt-zu-Punkt-Verbindung."),
])
def test_spoken_punctuation_leaves_words_joined_by_a_hyphen(language, text):
    assert finish(text, language, TextOptions(spoken_punctuation=True)) == text


@pytest.mark.parametrize("language, text", [
    ("de", "Das ist ein wichtiger Punkt für uns."),  # was "Das ist ein wichtiger. Für uns."
    ("de", "Ich brauche eine neue Zeile hier."),
    ("de", "Ein Komma steht im falschen Satz, und der Punkt fehlt."),
    ("en", "Add a new line of code and a comma."),
    ("fr", "Le point est clair, une virgule manque."),
    ("es", "El punto es claro y una coma sobra."),
])
def test_a_command_after_a_determiner_is_the_noun(language, text):
    assert finish(text, language, TextOptions(spoken_punctuation=True)) == text


@pytest.mark.parametrize("language, raw, written", [
    ("de", "Ich sehe den Hund Punkt", "Ich sehe den Hund."),  # a capitalised noun between: a command
    ("de", "Das gefällt mir am besten Punkt", "Das gefällt mir am besten."),
    ("en", "I want that period", "I want that."),  # "that" can end a clause
    ("en", "They cost two dollars each period", "They cost two dollars each."),
    ("de", "Ich kaufe ein Punkt", "Ich kaufe ein."),  # "ein" as the verb's particle (einkaufen)
    ("de", "Das weiß jeder Punkt", "Das weiß jeder."),
    ("de", "Ich habe keine Komma du auch nicht", "Ich habe keine, du auch nicht"),
    ("de", "Warte ein bisschen Punkt", "Warte ein bisschen."),
])
def test_a_command_after_a_determiner_and_its_noun_is_a_command(language, raw, written):
    assert finish(raw, language, TextOptions(spoken_punctuation=True)) == written


# ---- spacing and capitalisation ------------------------------------------------------------------------
def test_tidy_repairs_spacing_and_sentence_starts():
    assert tidy("  hello ,  world .  next one ! ok", "en") == "Hello, world. Next one! Ok"
    assert tidy("line one \n  line two", "en") == "Line one\nLine two"
    assert tidy(", and so on", "en") == "And so on"


@pytest.mark.parametrize("text", ["I use .NET every day.", "Put the key in the .env file.", "Note: .NET is great.",
                                  "It costs .5 dollars."])
def test_tidy_keeps_the_space_before_a_word_that_starts_with_a_dot(text):
    assert tidy(text, "en") == text  # not "I use.NET", "Note.NET"


def test_tidy_keeps_what_needs_no_repair():
    for text in ("iPhone sales rose 3.5% in Q1.", "Version 2.0 is out: see https://example.org/a?b=c.", "gRPC works."):
        assert tidy(text, "en") == text
    assert tidy("我们明天见。", "zh") == "我们明天见。"


@pytest.mark.parametrize("raw, written", [
    ("建建其恒毫,我们是外面之物犯法。", "建建其恒毫，我们是外面之物犯法。"),  # Whisper base's own mix
    ("你能把报告发给我吗?", "你能把报告发给我吗？"),
    ("OK, 我们走吧!", "OK，我们走吧！"),  # the space after a converted mark goes with it
    ("真的吗?!", "真的吗？！"),
    ("时间:十点", "时间：十点"),
])
def test_mandarin_marks_are_full_width(raw, written):
    assert tidy(raw, "zh") == written


@pytest.mark.parametrize("text", ["版本2.0发布了。", "我用Node.js写的。", "我们...然后呢", "会议在10:30开始。",
                                  "我买了iPhone 15."])
def test_mandarin_keeps_marks_that_touch_no_han(text):
    assert tidy(text, "zh") == text


@pytest.mark.parametrize("language, text", [
    ("en", "Let's meet at 5 p.m. tomorrow."),  # not "5 p.m. Tomorrow"
    ("en", "Use a tool, e.g. a hammer, i.e. this one."),
    ("en", "I was thinking... maybe not."),  # not "thinking... Maybe"
    ("en", "Wait... what?"),
    ("en", "Mr. and Mrs. Smith are coming to dinner."),  # was "Mr. And Mrs. Smith"
    ("en", "We need pens, paper, etc. and a stapler."),  # was "etc. And a stapler"
    ("de", "Wir brauchen z. B. mehr Zeit, d. h. wir warten."),  # was "z. B. Mehr Zeit, d. H. Wir warten"
    ("de", "Äpfel, Birnen usw. und dann Brot, bzw. was da ist."),
    ("de", "Das Treffen ist am 10. und 11. Mai, am 3.10. und am 4. oder 5. Juni."),  # ordinals, dates
    ("fr", "Voir p. ex. le chapitre, cf. la note."),
    ("es", "El Sr. y la Sra. García, p. ej. los dos."),
])
def test_an_ellipsis_or_abbreviation_ends_no_sentence(language, text):
    assert finish(text, language, TextOptions()) == text


def test_a_number_ends_a_sentence_outside_german():
    assert tidy("It costs 5. then we go", "en") == "It costs 5. Then we go"


def test_a_sentence_the_pipeline_opens_after_a_word_is_still_capitalised():
    assert finish("I see. um, then we go.", "en", TextOptions()) == "I see. Then we go."
    assert finish("Es ist gut Punkt danke", "de", TextOptions(spoken_punctuation=True)) == "Es ist gut. Danke"


# ---- the whole pipeline --------------------------------------------------------------------------------
def test_finish_runs_the_steps_in_order():
    options = TextOptions(vocabulary=("Kubernetes",), replacements=(("at sign", "@"),), remove_fillers=True,
                          spoken_punctuation=True)
    raw = "Um, mail ops at sign cuber netties dot io comma uh thanks period"
    # Correction runs first, so the replacement and punctuation see "Kubernetes".
    assert finish(raw, "en", options) == "Mail ops @ Kubernetes dot io, thanks."


def test_finish_with_everything_off_only_tidies():
    options = TextOptions(remove_fillers=False)
    assert finish("Um, the umbrella.", "en", options) == "Um, the umbrella."


def test_the_pipeline_imports_neither_torch_nor_qt():
    """It runs in the GUI process, which never loads torch (tests/test_worker_imports.py checks the rest)."""
    code = "import sys, app.text; bad = {'torch', 'PySide6'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_transcript_the_engine_began_in_lower_case_stays_so():
    assert finish("so, um, we go. then home", "en", TextOptions()) == "so, we go. Then home"
    assert finish("Um, so we go.", "en", TextOptions()) == "So we go."
    assert tidy("ok then", "en", capitalise_start=False) == "ok then"


@pytest.mark.parametrize(("raw", "expected"), [
    (" New paragraph. Next topic.", "\n\nNext topic."),
    (" That is all. New line.", "That is all.\n"),
    (" New paragraph.", "\n\n"),  # a break said on its own is pasted too
    (" Hello.\n", "Hello."),  # the engine's own line break at the end is not the user's
])
def test_a_layout_command_at_either_end_keeps_its_break(raw, expected):
    assert finish(raw, "en", TextOptions(spoken_punctuation=True)) == expected
