"""Real-world infotexts, each with what a correct reader gets from it. The texts come from public sources named on
each sample (A1111's own docstring, reader projects' test fixtures); the expected values are the text's own values.

`not_applied` lists the keys of features sdart does not have (ADetailer, ControlNet, FreeU, Forge's modules, …):
re-running the image must name each of them. Keys of features being added (hires fix, variation seeds, schedule
types) are checked by the rule "applied, or named", whichever holds when the test runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    id: str
    source: str
    text: str
    prompt: str
    negative_prompt: str
    fields: dict[str, Any]  # request fields read from it (a subset)
    params: dict[str, str] = field(default_factory=dict)  # raw values that must come back whole (a subset)
    not_applied: frozenset[str] = frozenset()


CORPUS = (
    Sample(
        "a1111-docstring", "AUTOMATIC1111/stable-diffusion-webui modules/infotext_utils.py, parse_generation_parameters",
        "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse "
        "Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\n"
        "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, "
        "mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b",
        "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse "
        "Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate",
        "ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, "
        "mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing",
        {"steps": 20, "sampler_name": "Euler a", "cfg_scale": 7.0, "seed": 965400086, "width": 512, "height": 512},
        # Before A1111 wrote `Model`, the hash alone named the checkpoint: that asks for a model sdart can't find.
        not_applied=frozenset({"Model hash"}),
    ),
    Sample(
        "sd-parsers-hashes", "d3x-at/sd-parsers tests/test_automatic1111.py (PARAMETERS + Hashes)",
        "photo of a duck\nNegative prompt: monochrome\n"
        "Steps: 15, Sampler: UniPC, CFG scale: 5, Seed: 235284042, Size: 512x400, Model hash: c0d1994c73, "
        'Model: realistic_realisticVisionV20_v20, Hashes: {"vae": "c6a580b13a", "model": "c0d1994c73"}',
        "photo of a duck", "monochrome",
        {"steps": 15, "sampler_name": "UniPC", "cfg_scale": 5.0, "seed": 235284042, "width": 512, "height": 400,
         "model": "realistic_realisticVisionV20_v20"},
        {"Hashes": '{"vae": "c6a580b13a", "model": "c0d1994c73"}'},
    ),
    Sample(
        "sd-manager-adetailer", "albertpb/sd-manager src/__tests__/utils/mocks/automatic1111.mock.ts (A1111 v1.6.0)",
        "1girl, bedroom, full moon, night sky, sitting on bed, starry sky print, window\n"
        "Negative prompt: (worst quality), (low quality), (normal quality), (extra fingers, deformed hands, "
        "polydactyl:1.5), EasyNegativeV2, ng_deepnegative_v1_75t, bad_prompt_version2, bad-artist, badquality\n"
        "Steps: 30, Sampler: DPM++ 2M SDE Karras, CFG scale: 7, Seed: 3998689704, Size: 1280x768, Model hash: "
        "879db523c3, Model: dreamshaper_8, VAE hash: 63aeecb90f, VAE: vae-ft-mse-840000-ema-pruned.safetensors, "
        "Denoising strength: 0.5, Clip skip: 2, RNG: CPU, ADetailer model: face_yolov8n.pt, ADetailer prompt: "
        '"(masterpiece:1.4, best quality), beautiful face, perfect face", ADetailer negative prompt: "(worst quality), '
        '(low quality), (normal quality), (ugly, poorly drawn face), EasyNegativeV2, ng_deepnegative_v1_75t, '
        'bad_prompt_version2, bad-artist ", ADetailer confidence: 0.3, ADetailer dilate erode: 4, ADetailer mask blur: 4, '
        "ADetailer denoising strength: 0.4, ADetailer inpaint only masked: True, ADetailer inpaint padding: 32, "
        'ADetailer version: 23.11.0, FreeU Stages: "[{"backbone_factor": 1.2, "skip_factor": 0.9}, {"backbone_factor": '
        '1.4, "skip_factor": 0.2}]", FreeU Schedule: "0.0, 1.0, 0.0", FreeU Version: 2, ControlNet 0: "Module: none, '
        "Model: control_v11p_sd15_openpose [cab727d4], Weight: 1, Resize Mode: Crop and Resize, Low Vram: False, "
        'Guidance Start: 0, Guidance End: 1, Pixel Perfect: True, Control Mode: Balanced", Hires upscale: 1.5, Hires '
        'upscaler: Latent, TI hashes: "EasyNegativeV2: 339cc9210f70, ng_deepnegative_v1_75t: 54e7e4826d53, '
        'bad_prompt_version2: 6f35e7dd816a, bad-artist: 2d356134903e", Version: v1.6.0, Score: 7.64',
        "1girl, bedroom, full moon, night sky, sitting on bed, starry sky print, window",
        "(worst quality), (low quality), (normal quality), (extra fingers, deformed hands, polydactyl:1.5), "
        "EasyNegativeV2, ng_deepnegative_v1_75t, bad_prompt_version2, bad-artist, badquality",
        {"steps": 30, "sampler_name": "DPM++ 2M SDE Karras", "cfg_scale": 7.0, "seed": 3998689704, "width": 1280,
         "height": 768, "clip_skip": 2, "model": "dreamshaper_8"},
        {"ADetailer prompt": "(masterpiece:1.4, best quality), beautiful face, perfect face",
         "FreeU Stages": '[{"backbone_factor": 1.2, "skip_factor": 0.9}, {"backbone_factor": 1.4, "skip_factor": 0.2}]',
         "ControlNet 0": "Module: none, Model: control_v11p_sd15_openpose [cab727d4], Weight: 1, Resize Mode: Crop and "
                         "Resize, Low Vram: False, Guidance Start: 0, Guidance End: 1, Pixel Perfect: True, Control "
                         "Mode: Balanced", "RNG": "CPU", "Score": "7.64"},
        frozenset({"ADetailer model", "ADetailer prompt", "ADetailer confidence", "ADetailer version", "FreeU Stages",
                   "FreeU Schedule", "FreeU Version", "ControlNet 0", "VAE"}),
    ),
    Sample(
        "stabilitymatrix-style-selector", "LykosAI/StabilityMatrix StabilityMatrix.Tests/Models/GenerationParametersTests.cs",
        "test123\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3589107295, Size: 1024x1028, Model hash: 9aa0c3e54d, "
        "Model: nightvisionXL_v0770_BakedVAE, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, Style Selector "
        "Enabled: True, Style Selector Randomize: False, Style Selector Style: base, Version: 1.6.0",
        "test123", "",
        {"steps": 20, "sampler_name": "Euler a", "cfg_scale": 7.0, "seed": 3589107295, "width": 1024, "height": 1028},
        not_applied=frozenset({"Style Selector Enabled", "Style Selector Style", "VAE"}),
    ),
    Sample(
        "pony-a1111-multiline", "a reader project's fixture of a real A1111 1.7 SDXL image (names altered there)",
        "score_9, score_8_up, score_7_up, 1girl, solo, <lora:add_detail:0.6>, looking at viewer, cherry blossoms, "
        "<lora:Pony_Style_XL:0.8>\nupper body, smile\nNegative prompt: score_4, score_5, score_6, lowres, bad anatomy,\n"
        "worst quality\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3141592653, Size: 832x1216, Model hash: "
        "67ab2fd8ec, Model: ponyDiffusionV6XL_v6StartWithThisOne, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, Clip "
        'skip: 2, Lora hashes: "add_detail: 7c6bad76eb54, Pony_Style_XL: 0123abcd4567", Version: v1.7.0, Hashes: '
        '{"vae": "235745af8d", "lora:add_detail": "7c6bad76eb54", "model": "67ab2fd8ec"}',
        "score_9, score_8_up, score_7_up, 1girl, solo, <lora:add_detail:0.6>, looking at viewer, cherry blossoms, "
        "<lora:Pony_Style_XL:0.8>\nupper body, smile",
        "score_4, score_5, score_6, lowres, bad anatomy,\nworst quality",
        {"steps": 30, "sampler_name": "DPM++ 2M Karras", "cfg_scale": 7.0, "seed": 3141592653, "clip_skip": 2},
        {"Lora hashes": "add_detail: 7c6bad76eb54, Pony_Style_XL: 0123abcd4567",
         "Hashes": '{"vae": "235745af8d", "lora:add_detail": "7c6bad76eb54", "model": "67ab2fd8ec"}'},
        frozenset({"VAE"}),
    ),
    Sample(
        "civitai-illustrious", "a reader project's fixture of Civitai generator output (keys out of A1111's order)",
        "masterpiece, best quality, 1girl, red hair, forest, dappled sunlight\n"
        "Negative prompt: worst quality, low quality, watermark\n"
        "Steps: 28, CFG scale: 5.5, Sampler: Euler a, Seed: 987654321, workflow: txt2img, Size: 832x1216, draft: false, "
        "Clip skip: 2, Created Date: 2024-11-02T10:11:12.1234567Z, Civitai resources: [{\"type\":\"checkpoint\","
        "\"modelVersionId\":1190596,\"modelName\":\"WAI-illustrious-SDXL\",\"modelVersionName\":\"v11.0\"},{\"type\":"
        "\"lora\",\"weight\":0.8,\"modelVersionId\":456789,\"modelName\":\"Detailer, Illustrious\",\"modelVersionName\":"
        "\"v1.0\"}], Civitai metadata: {\"remixOfId\":12345}",
        "masterpiece, best quality, 1girl, red hair, forest, dappled sunlight", "worst quality, low quality, watermark",
        {"steps": 28, "cfg_scale": 5.5, "sampler_name": "Euler a", "seed": 987654321, "width": 832, "height": 1216,
         "clip_skip": 2},
        {"Created Date": "2024-11-02T10:11:12.1234567Z", "Civitai metadata": '{"remixOfId":12345}',
         "Civitai resources": '[{"type":"checkpoint","modelVersionId":1190596,"modelName":"WAI-illustrious-SDXL",'
                              '"modelVersionName":"v11.0"},{"type":"lora","weight":0.8,"modelVersionId":456789,'
                              '"modelName":"Detailer, Illustrious","modelVersionName":"v1.0"}]'},
    ),
    Sample(
        "civitai-flux-undefined-sampler", "a reader project's fixture of Civitai's Flux output",
        "A cinematic photo of an old fisherman mending nets at dawn, warm light, mist over the harbor\n"
        "Steps: 20, CFG scale: 3.5, Sampler: Undefined, Seed: 1234567890, Size: 832x1216, Clip skip: 1, Created Date: "
        '2024-09-01T00:00:00.000Z, Civitai resources: [{"type":"checkpoint","modelVersionId":691639,"modelName":"FLUX",'
        '"modelVersionName":"Dev"}], Civitai metadata: {}',
        "A cinematic photo of an old fisherman mending nets at dawn, warm light, mist over the harbor", "",
        {"steps": 20, "cfg_scale": 3.5, "sampler_name": "Undefined", "seed": 1234567890},
        not_applied=frozenset({"Sampler"}),  # no such sampler: A1111's fallback runs, and says so
    ),
    Sample(
        "forge-flux", "a reader project's fixture of a Forge (f2.0.1v1.10.1) Flux image",
        "Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 1083098466, "
        'Size: 1360x792, Model hash: 58725940e3, Model: flux-hyp16-Q5_0, Lora hashes: "flux_lora_nina1: e3b0c44298fc", '
        "Version: f2.0.1v1.10.1-previous-530-g8bd7e056, Diffusion in Low Bits: Automatic (fp16 LoRA), Module 1: ae, "
        "Module 2: clip_l, Module 3: t5xxl_fp8_e4m3fn",
        "", "",
        {"steps": 20, "sampler_name": "Euler", "cfg_scale": 1.0, "seed": 1083098466, "width": 1360, "height": 792},
        {"Diffusion in Low Bits": "Automatic (fp16 LoRA)", "Module 3": "t5xxl_fp8_e4m3fn"},
        frozenset({"Distilled CFG Scale", "Diffusion in Low Bits", "Module 1", "Module 2", "Module 3"}),
    ),
    Sample(
        "a1111-hires-adetailer", "a reader project's fixture of an A1111 1.9 hires-fix image",
        "photo of a cozy cabin in snowy woods, golden hour\nNegative prompt: (worst quality:1.4), cartoon\n"
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6, Seed: 777, Size: 512x768, Model hash: "
        "6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 1, ADetailer model: "
        'face_yolov8n.pt, ADetailer confidence: 0.3, ADetailer prompt: "detailed face, smile", ADetailer version: '
        "24.1.2, Hires upscale: 2, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+, Version: v1.9.4",
        "photo of a cozy cabin in snowy woods, golden hour", "(worst quality:1.4), cartoon",
        {"steps": 25, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "cfg_scale": 6.0, "seed": 777},
        {"ADetailer prompt": "detailed face, smile", "Hires upscaler": "R-ESRGAN 4x+"},
        frozenset({"ADetailer model", "ADetailer confidence", "ADetailer prompt", "ADetailer version"}),
    ),
    Sample(
        "sdnext-wrapped", "a reader project's SD.Next sample (parameters wrapped over lines)",
        "masterpiece, high quality, aesthetic, girl, ponytail, hair between eyes,\nupper body, portrait, monochrome, "
        "gray_scale, line art\nNegative prompt: low quality, worst quality, cropped\n"
        "Steps: 20, Size: 1312x1408, Seed: 1561296656, CFG scale: 6,\n"
        "CFG rescale: 0.7, Model: hassakuXLIllustrious_v21fix, Model hash: 847403d47a,\n"
        "App: SD.Next, Version: 8b73cb6, Pipeline: StableDiffusionXLPipeline,\n"
        "Operations: txt2img, LoRA networks: outline_xl_kohaku_delta_spv5x",
        "masterpiece, high quality, aesthetic, girl, ponytail, hair between eyes,\nupper body, portrait, monochrome, "
        "gray_scale, line art", "low quality, worst quality, cropped",
        {"steps": 20, "seed": 1561296656, "cfg_scale": 6.0, "width": 1312, "height": 1408},
        {"App": "SD.Next", "Pipeline": "StableDiffusionXLPipeline"},
        frozenset({"CFG rescale", "LoRA networks"}),
    ),
    Sample(
        "comfyui-ish-big-seed", "d3x-at/sd-parsers tests/resources/parsers/ComfyUI/img2img_cropped.py (its seed), "
                                "written as a ComfyUI saver writes A1111 text",
        "photograph of victorian woman with wings, sky clouds, meadow grass\nNegative prompt: watermark, text\n"
        "Steps: 20, Sampler: dpmpp_2m, Scheduler: normal, CFG scale: 8, Seed: 280823642470253, Size: 512x512, "
        "Model: v1-5-pruned-emaonly.ckpt, Denoise: 0.87",
        "photograph of victorian woman with wings, sky clouds, meadow grass", "watermark, text",
        {"steps": 20, "cfg_scale": 8.0, "seed": 280823642470253, "width": 512, "height": 512},
        not_applied=frozenset({"Scheduler", "Denoise"}),
    ),
)
