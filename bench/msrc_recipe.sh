# The MSRC-v2 recipe: params for real photos with the pretrained MobileNet, as `--set` arguments.
# Sourced by bench/cam_msrc.sh, bench/pipeline_msrc.sh and bench/segment_msrc.sh; the README's
# MSRC-v2 workspace command is the same list. Each value was chosen by a measurement (figures in
# the comments: CAM / random walk / RCA mIoU on the 335 train masks, argmax over tags).
# shellcheck disable=SC2034
MSRC_SETS=(
  --set ingest.size=320
  # cam: pretrained MobileNet, frozen BN statistics, stride 16; linear probe of the head first
  # (LP-FT: 45.2 -> 61.4 single-scale CAM mIoU), then a gentle backbone lr under a fast head, crops
  # covering most of the image (small crops cut tagged objects out: 0.409 -> 0.452 before LP-FT).
  # Scales 1, 0.5, 1.5 + flip (64.3; scale 2.0 costs 4x a scale-1 pass and 2.9 GB RSS).
  --set cam.backbone=mobilenet --set cam.norm=frozen --set cam.output_stride=16 --set cam.probe_iters=500
  --set cam.optimizer=adamw --set cam.lr=0.0001 --set cam.head_lr_mult=100 --set cam.epochs=8 --set cam.batch_size=16
  --set cam.crop=224 --set cam.crop_scale=[0.7,1.0] --set cam.scales=[1.0,0.5,1.5]
  # ReCAM re-activation loss (weight 1, ReCAM's lambda): separates classes that co-occur with others
  # (CAM 64.3 -> 67.4, random walk 66.7 -> 71.6; mountain 22 -> 47, car 57 -> 74), and in RCA's training
  # (RCA + random walk 68.4 -> 72.7, pseudo-masks 74.5 -> 80.8, pseudo-mask net val 66.6 -> 71.3;
  # the oracle from this cam model 81.3 -> 82.1, so weak / oracle 0.82 -> 0.868)
  --set cam.recam_weight=1 --set contrast.recam_weight=1
  # affinity: 128 px crops (3x faster than whole images), a longer walk on the 80 x 54 grid
  # (beta 16, 2^6 steps: 66.7 vs CAM 64.3)
  --set affinity.crop=128 --set affinity.beta=16 --set affinity.logt=6
  # contrast (RCA) from the cam weights, the cam recipe's crops and lr (RCA 66.3, + random walk 68.3), softmax
  # similarity (the default; raw, as RCA's code: RCA 31.3), 6 epochs
  --set contrast.crop=224 --set contrast.crop_scale=[0.7,1.0] --set contrast.lr=0.0001 --set contrast.head_lr_mult=10
  --set contrast.epochs=6 --set contrast.scales=[1.0,0.5,1.5]
  # segment: 224 px crops, the gentle backbone lr of the cam recipe under a fast head (oracle at 10
  # epochs: lr 1e-4 with head 10x / 30x / 100x -> 68.3 / 71.9 / 72.1 val mIoU; lr 3e-4 -> 47.8:
  # a large backbone lr destroys the pretrained features), 20 epochs
  --set segment.crop=224 --set segment.batch_size=8 --set segment.optimizer=adamw --set segment.lr=0.0001
  --set segment.head_lr_mult=30 --set segment.epochs=20 --set segment.head_dim=64
  # segment inference: scales 1, 0.75, 1.25 + flip, then the dense CRF (segment.crf, the default)
  # (val mIoU, none / oracle: scale 1 60.3 / 73.8, + CRF 63.6 / 76.7, 3 scales + CRF 64.6 / 77.5)
  --set segment.scales=[1.0,0.75,1.25]
  # ReCo contrast: the best of the four losses for the pseudo-mask net (val mIoU at scale 1 without
  # CRF: none 58.8, pixel 59.5, reco 60.4, spml 59.5; with 3 scales + CRF: none 64.6, reco 66.6),
  # 2x the training time. It helps the oracle more (77.5 -> 81.3), so the weak / oracle ratio falls
  # (before ReCAM: none 64.6 / 77.5 = 0.83, reco 66.6 / 81.3 = 0.82; with ReCAM 71.3 / 82.1 = 0.868).
  --set segment.contrast=reco
)
