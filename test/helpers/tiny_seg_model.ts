/**
 * A tiny untrained segmentation model folder for predict's tests (classes bg, a, b; 24 px working
 * size; one scale, no flip, no CRF): predict's behaviour does not depend on trained weights.
 * The CAM model it grows from is written beside it (`<root>/cam`).
 */
import * as path from 'node:path';
import { CAM_MODEL_FORMAT, buildCamNet, saveCamModel } from '../../nn/cam_net.js';
import { saveSegModel, segNetFromCam } from '../../stages/segment/net.js';

export async function writeTinySegModel(root: string, modelDir = path.join(root, 'model')): Promise<string> {
  const camDir = path.join(root, 'cam');
  const cam = await buildCamNet({
    format: CAM_MODEL_FORMAT, version: 1, backbone: { kind: 'resnet', outputStride: 8, norm: 'batch', width: 4, depth: [1, 1, 1, 1] },
    classes: ['bg', 'a', 'b'], background: 0, outputs: [1, 2],
  }, 5, true);
  await saveCamModel(camDir, cam);
  cam.dispose();
  const net = await segNetFromCam(camDir, { classes: ['bg', 'a', 'b'], background: 0, dim: 8, decoder: true, workingSize: 24, scales: [1], flip: false, crf: null, seed: 2 });
  await saveSegModel(modelDir, net);
  net.dispose();
  return modelDir;
}
