import type { ImageFolderDataset } from '../data/image_folder.js';

/** Reports the files an image folder skipped (first `limit` with reasons) and how many images it holds. */
export function reportImageFolder(ds: ImageFolderDataset, folder: string, log: (line: string) => void, limit = 20): void {
  if (ds.skipped.length) {
    log(`data: skipped ${ds.skipped.length} file(s):`);
    for (const s of ds.skipped.slice(0, limit)) log(`  ${s.path}: ${s.reason}`);
    if (ds.skipped.length > limit) log(`  … and ${ds.skipped.length - limit} more`);
  }
  log(`data: ${ds.length} images from ${folder}`);
}
