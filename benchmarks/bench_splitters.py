"""Sentence splitters against a small hand-written gold set: sentencex (what the package uses), pysbd (what it used
before) and the punctuation regex that the package used for every language pysbd lacks or when pysbd was missing.

    python benchmarks/bench_splitters.py            # agreement per language, then speed on the gold texts x 200
    python benchmarks/bench_splitters.py --quick    # speed on x 2 (seconds, CI)

Agreement: the share of documents split exactly as the gold set splits them, and the F1 of sentence boundaries
(positions counted in non-space characters, so whitespace kept or dropped does not matter). The gold splits follow
the ordinary typographic rules of each language, written by hand and never edited to match a splitter's output;
they hold the usual hard cases (abbreviations, initials, ordinals, decimals, closing quotes, ellipses, paragraphs,
CJK text without spaces). A few of those cases were tried on both splitters while choosing one, so the set is small
and not blind: read it as a check of the cases, not as an accuracy estimate. Speed: characters per second over all
gold texts repeated, the median of 3 passes, one process. pysbd is optional here (`pip install pysbd`); without it,
its column is left out. `--misses` prints every document a splitter gets wrong.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import re
import time

import sentencex

# language (sentencex / pysbd code) -> list of (document, gold sentences)
GOLD: dict[str, list[tuple[str, list[str]]]] = {
    "en": [
        ("Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. One day, she "
         "saw a big red ball.", ["Once upon a time, there was a little girl named Lily.",
                                 "She loved to play outside in the sun.", "One day, she saw a big red ball."]),
        ('Tom said, "Let\'s go to the park!" "Okay," said his mom. They walked together.',
         ['Tom said, "Let\'s go to the park!"', '"Okay," said his mom.', "They walked together."]),
        ('He said "hi." She left.', ['He said "hi."', "She left."]),
        ("Mr. Brown lives next door. He has a dog named Max.", ["Mr. Brown lives next door.",
                                                                 "He has a dog named Max."]),
        ("Dr. Smith arrived at 9 a.m. on Monday. She was late.", ["Dr. Smith arrived at 9 a.m. on Monday.",
                                                                   "She was late."]),
        ("The price rose by 3.5% in 2020. Nobody expected that.", ["The price rose by 3.5% in 2020.",
                                                                    "Nobody expected that."]),
        ("Wait... what was that? It was only the wind.", ["Wait... what was that?", "It was only the wind."]),
        ("Is it true? Yes! I can't believe it!", ["Is it true?", "Yes!", "I can't believe it!"]),
        ("The U.S. economy grew last year. Exports were strong.", ["The U.S. economy grew last year.",
                                                                   "Exports were strong."]),
        ("She moved to the U.S. Her brother stayed in Canada.", ["She moved to the U.S.",
                                                                 "Her brother stayed in Canada."]),
        ("J. K. Rowling wrote the books. They sold millions of copies.", ["J. K. Rowling wrote the books.",
                                                                          "They sold millions of copies."]),
        ("Sam looked at the dark sky.\n\nThe next morning, the sun came out.",
         ["Sam looked at the dark sky.", "The next morning, the sun came out."]),
    ],
    "de": [
        ("Es war einmal ein kleines Mädchen. Sie hieß Anna und wohnte am Waldrand.",
         ["Es war einmal ein kleines Mädchen.", "Sie hieß Anna und wohnte am Waldrand."]),
        ("Dr. Müller kam um 10 Uhr. Er war pünktlich.", ["Dr. Müller kam um 10 Uhr.", "Er war pünktlich."]),
        ("Am 3. Oktober feiern wir den Tag der Deutschen Einheit. Viele Menschen haben frei.",
         ["Am 3. Oktober feiern wir den Tag der Deutschen Einheit.", "Viele Menschen haben frei."]),
        ("Er sagte: „Ich komme morgen.“ Dann ging er nach Hause.",
         ["Er sagte: „Ich komme morgen.“", "Dann ging er nach Hause."]),
        ("Das kostet ca. 20 Euro. Das ist nicht viel.", ["Das kostet ca. 20 Euro.", "Das ist nicht viel."]),
        ("Hast du das gesehen? Nein! Wirklich nicht?", ["Hast du das gesehen?", "Nein!", "Wirklich nicht?"]),
        ("Wir brauchen z. B. Mehl, Eier usw. für den Kuchen. Zucker haben wir schon.",
         ["Wir brauchen z. B. Mehl, Eier usw. für den Kuchen.", "Zucker haben wir schon."]),
        ("Frau Prof. Schmidt hielt eine Vorlesung. Die Studenten hörten zu.",
         ["Frau Prof. Schmidt hielt eine Vorlesung.", "Die Studenten hörten zu."]),
        ("Der Zug fährt um 14.30 Uhr ab. Sei bitte pünktlich.", ["Der Zug fährt um 14.30 Uhr ab.",
                                                                 "Sei bitte pünktlich."]),
        ("Er wartete... Niemand kam.", ["Er wartete...", "Niemand kam."]),
        ("Das Treffen ist im Jan. geplant. Alle sind eingeladen.", ["Das Treffen ist im Jan. geplant.",
                                                                     "Alle sind eingeladen."]),
        ("Die Katze schlief.\n\nAm Morgen war sie weg.", ["Die Katze schlief.", "Am Morgen war sie weg."]),
    ],
    "fr": [
        ("Il était une fois un petit garçon. Il s'appelait Paul.", ["Il était une fois un petit garçon.",
                                                                   "Il s'appelait Paul."]),
        ("M. Dupont est arrivé hier. Il était fatigué.", ["M. Dupont est arrivé hier.", "Il était fatigué."]),
        ("Il a dit : « Je reviens demain. » Puis il est parti.", ["Il a dit : « Je reviens demain. »",
                                                                  "Puis il est parti."]),
        ("Mme Martin habite à Paris. Elle aime les chats.", ["Mme Martin habite à Paris.", "Elle aime les chats."]),
        ("Le prix est de 3,5 euros. C'est cher !", ["Le prix est de 3,5 euros.", "C'est cher !"]),
        ("Tu viens ? Oui, j'arrive !", ["Tu viens ?", "Oui, j'arrive !"]),
        ("Il a acheté des pommes, des poires, etc. pour le dessert. Nous avons mangé ensemble.",
         ["Il a acheté des pommes, des poires, etc. pour le dessert.", "Nous avons mangé ensemble."]),
        ("Le Dr Leroy est médecin. Il travaille à l'hôpital.", ["Le Dr Leroy est médecin.",
                                                                "Il travaille à l'hôpital."]),
        ("Elle attendait... Personne ne venait.", ["Elle attendait...", "Personne ne venait."]),
        ("La réunion est à 14 h 30. Ne soyez pas en retard.", ["La réunion est à 14 h 30.",
                                                               "Ne soyez pas en retard."]),
        ("Voir p. 12 pour les détails. Merci.", ["Voir p. 12 pour les détails.", "Merci."]),
        ("Le chat dormait.\n\nLe lendemain, il était parti.", ["Le chat dormait.", "Le lendemain, il était parti."]),
    ],
    "es": [
        ("Había una vez una niña llamada Ana. Vivía cerca del mar.", ["Había una vez una niña llamada Ana.",
                                                                     "Vivía cerca del mar."]),
        ("El Sr. García llegó tarde. Nadie dijo nada.", ["El Sr. García llegó tarde.", "Nadie dijo nada."]),
        ("¿Cómo estás? ¡Muy bien, gracias!", ["¿Cómo estás?", "¡Muy bien, gracias!"]),
        ("Vive en EE. UU. desde 2010. Trabaja en un hospital.", ["Vive en EE. UU. desde 2010.",
                                                                 "Trabaja en un hospital."]),
        ("Ella dijo: «Vuelvo mañana». Luego se fue.", ["Ella dijo: «Vuelvo mañana».", "Luego se fue."]),
        ("La Dra. López es cardióloga. Tiene mucha experiencia.", ["La Dra. López es cardióloga.",
                                                                  "Tiene mucha experiencia."]),
        ("El precio subió un 3,5 % en 2020. Nadie lo esperaba.", ["El precio subió un 3,5 % en 2020.",
                                                                  "Nadie lo esperaba."]),
        ("Compró frutas, verduras, etc. para la cena. Cocinamos juntos.",
         ["Compró frutas, verduras, etc. para la cena.", "Cocinamos juntos."]),
        ("Esperó... Nadie vino.", ["Esperó...", "Nadie vino."]),
        ("Ver pág. 12 para más detalles. Gracias.", ["Ver pág. 12 para más detalles.", "Gracias."]),
        ("El perro dormía.\n\nA la mañana siguiente, ya no estaba.",
         ["El perro dormía.", "A la mañana siguiente, ya no estaba."]),
        ("¿Vienes? Sí. Ahora mismo.", ["¿Vienes?", "Sí.", "Ahora mismo."]),
    ],
    "ru": [
        ("Жила-была маленькая девочка. Её звали Маша.", ["Жила-была маленькая девочка.", "Её звали Маша."]),
        ("Он сказал: «Я вернусь завтра». Потом он ушёл.", ["Он сказал: «Я вернусь завтра».", "Потом он ушёл."]),
        ("Это произошло в 1999 г. в Москве. Никто не знал об этом.",
         ["Это произошло в 1999 г. в Москве.", "Никто не знал об этом."]),
        ("Ты придёшь? Да! Обязательно.", ["Ты придёшь?", "Да!", "Обязательно."]),
        ("Цена выросла на 3,5 %. Это много.", ["Цена выросла на 3,5 %.", "Это много."]),
        ("Он купил хлеб, молоко и т. д. для завтрака. Мы поели вместе.",
         ["Он купил хлеб, молоко и т. д. для завтрака.", "Мы поели вместе."]),
        ("Проф. Иванов читал лекцию. Студенты слушали.", ["Проф. Иванов читал лекцию.", "Студенты слушали."]),
        ("Он ждал... Никто не пришёл.", ["Он ждал...", "Никто не пришёл."]),
        ("Встреча в 14.30. Не опаздывайте.", ["Встреча в 14.30.", "Не опаздывайте."]),
        ("Т. е. всё было хорошо. Мы были рады.", ["Т. е. всё было хорошо.", "Мы были рады."]),
        ("Кошка спала.\n\nУтром её уже не было.", ["Кошка спала.", "Утром её уже не было."]),
        ("А. С. Пушкин родился в Москве. Он великий поэт.", ["А. С. Пушкин родился в Москве.",
                                                             "Он великий поэт."]),
    ],
    "zh": [
        ("从前有一个小女孩。她叫小红。", ["从前有一个小女孩。", "她叫小红。"]),
        ("你好吗？我很好！", ["你好吗？", "我很好！"]),
        ("他说：“我明天回来。”然后他就走了。", ["他说：“我明天回来。”", "然后他就走了。"]),
        ("今天天气很好。我们去公园吧！", ["今天天气很好。", "我们去公园吧！"]),
        ("价格上涨了3.5%。没有人想到。", ["价格上涨了3.5%。", "没有人想到。"]),
        ("你去哪儿？去学校。", ["你去哪儿？", "去学校。"]),
        ("小猫在睡觉。小狗在玩球。小鸟在唱歌。", ["小猫在睡觉。", "小狗在玩球。", "小鸟在唱歌。"]),
        ("“你要去哪里？”妈妈问。", ["“你要去哪里？”妈妈问。"]),
        ("我买了苹果、香蕉等水果。大家一起吃了。", ["我买了苹果、香蕉等水果。", "大家一起吃了。"]),
        ("他是美国人。他住在北京。", ["他是美国人。", "他住在北京。"]),
        ("小猫睡着了。\n\n第二天早上，它不见了。", ["小猫睡着了。", "第二天早上，它不见了。"]),
        ("这本书很好看，我推荐给你。", ["这本书很好看，我推荐给你。"]),
    ],
    "ja": [
        ("昔々、小さな女の子がいました。名前はハナです。", ["昔々、小さな女の子がいました。", "名前はハナです。"]),
        ("今日は晴れです。明日は雨でしょう。", ["今日は晴れです。", "明日は雨でしょう。"]),
        ("「本当？」と彼は聞いた。", ["「本当？」と彼は聞いた。"]),
        ("彼は「明日来ます。」と言った。そして帰った。", ["彼は「明日来ます。」と言った。", "そして帰った。"]),
        ("どこに行くの？学校だよ！", ["どこに行くの？", "学校だよ！"]),
        ("猫が寝ている。犬が遊んでいる。", ["猫が寝ている。", "犬が遊んでいる。"]),
        ("値段は3.5%上がった。誰も予想しなかった。", ["値段は3.5%上がった。", "誰も予想しなかった。"]),
        ("猫は寝ていた。\n\n翌朝、猫はいなかった。", ["猫は寝ていた。", "翌朝、猫はいなかった。"]),
    ],
}  # fmt: skip

# The package's splitter before sentencex, for languages pysbd lacks or when pysbd was not installed.
_OLD_FALLBACK = re.compile(r"(?<=[.!?。！？।؟])[\"'”’)\]]*\s+")


def _sentencex(lang: str):
    return lambda text: sentencex.segment(lang, text)


def _pysbd(lang: str):
    pysbd = importlib.import_module("pysbd")
    segmenter = pysbd.Segmenter(language=lang, clean=False)
    return segmenter.segment


def _regex(lang: str):
    return _OLD_FALLBACK.split


def _boundaries(sentences: list[str]) -> set[int]:
    """Sentence ends, counted in non-space characters, the document's end excluded."""
    ends, position = set(), 0
    for sentence in sentences:
        position += len("".join(sentence.split()))
        ends.add(position)
    return ends - {position}


def agreement(split, documents) -> dict:
    exact, true_positive, predicted, gold_total = 0, 0, 0, 0
    for text, gold in documents:
        pieces = [p.strip() for p in split(text) if p and p.strip()]
        exact += pieces == gold
        found, wanted = _boundaries(pieces), _boundaries(gold)
        true_positive += len(found & wanted)
        predicted += len(found)
        gold_total += len(wanted)
    precision = true_positive / predicted if predicted else 1.0
    recall = true_positive / gold_total if gold_total else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"exact": exact, "documents": len(documents), "boundary_f1": round(f1, 3)}


def chars_per_second(items: list[tuple], repeats: int) -> float:
    """`items`: (split function, text) pairs, all split `repeats` times per pass; the median pass of 3."""
    corpus = items * repeats
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        for split, text in corpus:
            split(text)
        seconds.append(time.perf_counter() - start)
    return sum(len(text) for _, text in corpus) / sorted(seconds)[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=200, help="gold texts repeated this many times for speed")
    parser.add_argument("--misses", action="store_true", help="print the documents each splitter gets wrong")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    splitters = {"sentencex": _sentencex, "pysbd": _pysbd, "old regex": _regex}
    if importlib.util.find_spec("pysbd") is None:
        del splitters["pysbd"]
    results = {"versions": {name: importlib.metadata.version(name) for name in ("sentencex", "pysbd")
                            if name in splitters}}  # fmt: skip
    misses = []
    print("| language | docs | " + " | ".join(f"{name} exact / F1" for name in splitters) + " |")
    print("|---|---|" + "---|" * len(splitters))
    for lang, documents in GOLD.items():
        row = {name: agreement(make(lang), documents) for name, make in splitters.items()}
        results[lang] = row
        for name, make in splitters.items() if args.misses else ():
            split = make(lang)
            for text, gold in documents:
                pieces = [p.strip() for p in split(text) if p and p.strip()]
                if pieces != gold:
                    misses.append(f"{name} {lang}: {pieces} (gold {gold})")
        cells = " | ".join(f"{r['exact']} / {r['boundary_f1']:.3f}" for r in row.values())
        print(f"| {lang} | {len(documents)} | {cells} |")
    if misses:
        print("\n".join(["", *misses]))
    speed = {}
    for name, make in splitters.items():
        split = {lang: make(lang) for lang in GOLD}  # built once, as the package caches nothing per call
        speed[name] = chars_per_second([(split[lang], text) for lang, docs in GOLD.items() for text, _ in docs],
                                       repeats)  # fmt: skip
    results["chars_per_second"] = {name: round(value) for name, value in speed.items()}
    print(f"\nspeed (characters/s, all gold texts x {repeats}): "
          + ", ".join(f"{name} {value:,.0f}" for name, value in speed.items()))  # fmt: skip
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
