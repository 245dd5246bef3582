#!/usr/bin/env node
// Entry for `npx tagseg`: the CLI is TypeScript run through tsx, so the
// code DVC executes is always the code in the tree (no stale build output).
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
