"""The `transformers.pipeline` of SONAR-LLM: continue texts sentence by sentence, as `text-generation` does tokens.

    pipe = pipeline(model="folder_or_repo", trust_remote_code=True)      # task read from config.json
    pipe("Once upon a time, there was a cat. The cat was hungry.", max_new_sentences=3)
    -> [{"generated_text": "Once upon a time, ... <three new sentences>"}]

Why a pipeline class of its own: `TextGenerationPipeline` tokenizes prompts and calls token-level `generate`, while
this model's unit is the sentence (`SonarLLMForCausalSentenceModeling.generate`). The class keeps the text-generation
contract users know: `generated_text`, `return_full_text`, `num_return_sequences`, lists and datasets in, one result
list per prompt out, every generation option of `generate` passed through (`max_new_sentences`, `num_beams`,
`do_sample`, `temperature`, `seed`, `lang`, ...), and `streamer=` (a `SentenceStreamer`, e.g.
`PrintSentenceStreamer`) to receive sentences as they are decoded. With `batch_size=N` the pipeline hands N prompts
to one `generate` call, which batches them through the backbone and SONAR.

Saved folders list it under the task "text-generation" (`custom_pipelines` in config.json, written by the model's
`save_pretrained`), so the Hub's `pipeline_tag: text-generation` and `pipeline("text-generation", model=repo,
trust_remote_code=True)` name what works; importing the `sonar_llm_hf` package also registers it as
"sentence-continuation" for any folder, the packaged demo included (no global task is overwritten).
"""

from __future__ import annotations

from collections.abc import Sized

import torch
from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .generation_sonar_llm import DEFAULT_SENTENCE_GENERATION, merge_generation_options

# The task name a saved folder's config.json lists, and the one the package registers globally.
HUB_TASK = "text-generation"
PACKAGE_TASK = "sentence-continuation"
# `generate` options that are not generation-config keys.
_CALL_OPTIONS = {"tokenizer", "lang", "generation_config", "streamer"}


def custom_pipelines_entry() -> dict:
    """The `custom_pipelines` value of a saved folder's config.json (`clean_custom_task` reads "pt" from
    `transformers`, hence `AutoModel`, which follows the folder's `auto_map`)."""
    return {HUB_TASK: {"impl": f"{__name__.rsplit('.', 1)[-1]}.SonarLLMSentencePipeline", "pt": ["AutoModel"],
                       "type": "text"}}  # fmt: skip


def _concatenate(items: list[dict]) -> dict:
    """Collate preprocessed prompts into one `generate` batch (the base pipeline pads token tensors instead)."""
    return {key: [value for item in items for value in item[key]] for key in items[0]}


class SonarLLMSentencePipeline(Pipeline):
    """Continue each prompt sentence by sentence with SONAR-LLM.

    Inputs: a string (split into sentences offline), a list of sentences wrapped in a list (`[["s1", "s2"]]`: one
    prompt given as sentences), or a list / dataset / generator of such prompts (a list of strings is a batch of
    prompts, as in `text-generation`).

    Call options:
        return_full_text (`bool`, defaults to True): `generated_text` holds prompt and continuation; False: only the
            new sentences.
        return_sentences (`bool`, defaults to False): also return `generated_sentences` (list) and `finished`
            (whether the document ended on the end sentence rather than a length limit).
        num_return_sequences (`int`, defaults to 1): continuations per prompt, one run each (needs `do_sample=True`;
            beam search would return the same text n times, and beam sampling, `do_sample=True` with the saved
            `num_beams=5`, varies far less than plain sampling with `num_beams=1`).
        streamer (`SentenceStreamer`): receives `[(prompt_index, sentence), ...]` each step; indices count the
            prompts of one `generate` call (one pipeline batch).
        every option of `SonarLLMForCausalSentenceModeling.generate` (`max_new_sentences`, `max_sentences`,
            `num_beams`, `do_sample`, `temperature`, `top_p`, `top_k`, `seed`, `lang`/`prompt_lang`, `target_lang`,
            `generation_config`, `tokenizer`, ...).
    """

    _load_tokenizer = False  # the model loads and carries its own SONAR tokenizer
    _load_feature_extractor = False
    _load_image_processor = False
    _load_processor = False

    def _sanitize_parameters(self, return_full_text=None, return_sentences=None, num_return_sequences=None,
                             **generate_kwargs):  # fmt: skip
        unknown = set(generate_kwargs) - set(DEFAULT_SENTENCE_GENERATION) - _CALL_OPTIONS
        if unknown:
            raise TypeError(
                f"Unknown option(s) for the SONAR-LLM pipeline: {', '.join(sorted(unknown))}. It takes "
                "`return_full_text`, `return_sentences`, `num_return_sequences` and the options of `model.generate`: "
                + ", ".join(sorted(set(DEFAULT_SENTENCE_GENERATION) | _CALL_OPTIONS))
                + "."
            )
        forward = dict(generate_kwargs)
        if num_return_sequences is not None:
            if not isinstance(num_return_sequences, int) or num_return_sequences < 1:
                raise ValueError(f"`num_return_sequences` must be a positive integer, got {num_return_sequences!r}.")
            forward["num_return_sequences"] = num_return_sequences
        postprocess = {}
        if return_full_text is not None:
            postprocess["return_full_text"] = bool(return_full_text)
        if return_sentences is not None:
            postprocess["return_sentences"] = bool(return_sentences)
        return {}, forward, postprocess

    def preprocess(self, prompt) -> dict:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("A prompt is empty: give text with at least one sentence to continue.")
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(s, str) for s in prompt):
            prompt = list(prompt)
        elif isinstance(prompt, torch.Tensor) and prompt.dim() == 2:
            pass  # one prompt as sentence embeddings (T, d)
        else:
            raise TypeError(
                "Each prompt must be a string, a list of sentences or a (sentences, dim) embedding tensor, got "
                f"{type(prompt).__name__}. Pass several prompts as a list of strings, or as a list of sentence lists."
            )
        # Lists of one: `_concatenate` joins them into a batch, and a single prompt is a batch of one.
        return {"prompts": [prompt]}

    def _forward(self, model_inputs: dict, num_return_sequences: int = 1, **generate_kwargs) -> dict:
        prompts = model_inputs["prompts"]
        if num_return_sequences > 1:
            settings = {k: v for k, v in generate_kwargs.items() if k in DEFAULT_SENTENCE_GENERATION}
            passed = generate_kwargs.get("generation_config")
            if not merge_generation_options(self.model.generation_config, passed, **settings)["do_sample"]:
                raise ValueError(
                    f"`num_return_sequences={num_return_sequences}` needs `do_sample=True`: SONAR's beam search is "
                    "deterministic and would return the same continuation each time."
                )
            prompts = [p for p in prompts for _ in range(num_return_sequences)]
        if self.tokenizer is not None and "tokenizer" not in generate_kwargs:
            if isinstance(self.tokenizer, str):
                raise TypeError(
                    f"`tokenizer={self.tokenizer!r}`: pass a loaded tokenizer "
                    "(`AutoTokenizer.from_pretrained(...)`), or none: the model carries its own."
                )
            generate_kwargs["tokenizer"] = self.tokenizer  # `pipeline(..., tokenizer=...)` overrides the model's
        output = self.model.generate(prompts, **generate_kwargs)
        n = num_return_sequences
        group = lambda values: [values[i : i + n] for i in range(0, len(values), n)]  # noqa: E731
        return {
            "prompt_sentences": group(output.prompt_sentences),
            "sentences": group(output.sentences),
            "finished": group(output.finished),
        }

    def postprocess(self, model_outputs: dict, return_full_text: bool = True, return_sentences: bool = False):
        # One prompt's outputs: each value holds its `num_return_sequences` continuations.
        (prompt_sentences,), (continuations,), (finished,) = (
            model_outputs[key] for key in ("prompt_sentences", "sentences", "finished")
        )
        records = []
        for prompt, sentences, done in zip(prompt_sentences, continuations, finished):
            text = " ".join([*prompt, *sentences] if return_full_text else sentences)
            record = {"generated_text": text}
            if return_sentences:
                record.update(generated_sentences=list(sentences), finished=bool(done))
            records.append(record)
        return records

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """Like `Pipeline.get_iterator`, but a batch is a list of prompts for one `generate` call, and results are
        split back per prompt here (the base class would pad token tensors and slice tensors)."""
        if isinstance(inputs, Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)  # an iterable cannot be split between workers
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_concatenate)
        for batch in loader:
            outputs = self.forward(batch, **forward_params)
            for index in range(len(batch["prompts"])):
                item = {key: [values[index]] for key, values in outputs.items()}
                yield self.postprocess(item, **postprocess_params)


__all__ = ["HUB_TASK", "PACKAGE_TASK", "SonarLLMSentencePipeline", "custom_pipelines_entry"]
