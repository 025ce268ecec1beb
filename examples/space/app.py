"""SONAR-LLM demo: continue a text sentence by sentence, streamed as each sentence is decoded.

    python examples/space/app.py [--model PATH_OR_REPO] [--port 7860]

Runs on the offline demo model by default (a miniature trained on a generated story world), or on any converted
checkpoint (`--model`, or the SONAR_LLM_MODEL environment variable on a Space). Requests queue: one generation runs
at a time, so concurrent users wait instead of competing for memory.
"""

from __future__ import annotations

import argparse
import os
import queue
import threading

import gradio as gr
import torch
from transformers import AutoModel

import sonar_llm_hf
from sonar_llm_hf.demo import default_model_path

LANGUAGES = list(sonar_llm_hf.SONAR_LANGUAGES)


class QueueStreamer(sonar_llm_hf.SentenceStreamer):
    """Hands sentences from the generation thread to the Gradio generator."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()

    def put(self, value):
        for _, sentence in value:
            self.queue.put(sentence)

    def end(self):
        self.queue.put(None)


def build_demo(model) -> gr.Blocks:
    def continue_text(prompt, prompt_lang, target_lang, eos_threshold, num_beams, max_sentences):
        if not prompt or not prompt.strip():
            raise gr.Error("Type a few sentences to continue.")
        streamer, errors = QueueStreamer(), []

        def run():
            try:
                with torch.no_grad():
                    model.generate(prompt, streamer=streamer, lang=prompt_lang, target_lang=target_lang,
                                   eos_threshold=float(eos_threshold), num_beams=int(num_beams),
                                   max_new_sentences=int(max_sentences))  # fmt: skip
            except Exception as error:  # shown to the user, not swallowed
                errors.append(error)
                streamer.end()

        threading.Thread(target=run, daemon=True).start()
        sentences = []
        while (sentence := streamer.queue.get()) is not None:
            sentences.append(sentence)
            yield " ".join(sentences)
        if errors:
            raise gr.Error(str(errors[0]))
        yield " ".join(sentences) if sentences else "(the model ended the text at once)"

    with gr.Blocks(title="SONAR-LLM") as demo:
        gr.Markdown("# SONAR-LLM\nA language model that predicts the next *sentence* as a SONAR embedding, then "
                    "decodes it to text. " + getattr(model, "demo_label", ""))  # fmt: skip
        prompt = gr.Textbox(
            label="Prompt",
            lines=3,
            elem_id="prompt",
            value="Once upon a time, there was a little cat named Mia. Mia had a red ball.",
        )
        with gr.Row():
            prompt_lang = gr.Dropdown(LANGUAGES, value="eng_Latn", label="Prompt language")
            target_lang = gr.Dropdown(LANGUAGES, value="eng_Latn", label="Continuation language")
        with gr.Row():
            eos = gr.Slider(-1.0, 1.0, value=0.98, step=0.01, label="End threshold (cosine to 'End of sequence.')")
            beams = gr.Slider(1, 8, value=5, step=1, label="SONAR beam size")
            maximum = gr.Slider(1, 32, value=6, step=1, label="Maximum new sentences")
        button = gr.Button("Generate", variant="primary", elem_id="generate")
        output = gr.Textbox(label="Continuation", lines=6, elem_id="output")
        button.click(continue_text, [prompt, prompt_lang, target_lang, eos, beams, maximum], output)
    return demo.queue(default_concurrency_limit=1, max_size=32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=os.environ.get("SONAR_LLM_MODEL"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    path = args.model or default_model_path(verbose=True)
    model = AutoModel.from_pretrained(path).eval()
    model.demo_label = "" if args.model else sonar_llm_hf.demo.DEMO_LABEL
    build_demo(model).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
