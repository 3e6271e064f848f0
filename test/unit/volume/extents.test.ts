/** The extent map a capture uses to skip a staged disk image's holes: parsed strictly, searched exactly. */
import { describe, expect, it } from 'vitest';
import { overlaps, parseFilefrag } from '../../../quorum-agent/volume/extents.js';

const SAMPLE = `Filesystem type is: ef53
File size of disk.img is 1073741824 (262144 blocks of 4096 bytes)
 ext:     logical_offset:        physical_offset: length:   expected: flags:
   0:        0..     129:          0..         0:      0:             unknown_loc,delalloc
   1:      133..     133:      34816..     34816:      1:             
   2:   255488..  255743:          0..         0:      0:             last,unknown_loc,delalloc
disk.img: 3 extents found
`;

describe('data extents from filefrag', () => {
  it('reads the table in bytes, and refuses output it does not fully understand', () => {
    expect(parseFilefrag(SAMPLE)).toEqual([
      [0, 130 * 4096],
      [133 * 4096, 134 * 4096],
      [255488 * 4096, 255744 * 4096],
    ]);
    // A row missing (the count disagrees), no header, or nonsense: undefined, so the whole file is read.
    expect(parseFilefrag(SAMPLE.replace(/^ {3}1:.*\n/m, ''))).toBeUndefined();
    expect(parseFilefrag(SAMPLE.replace(/^File size.*\n/m, ''))).toBeUndefined();
    expect(parseFilefrag('filefrag: Operation not supported')).toBeUndefined();
    expect(parseFilefrag('File size of x is 0 (0 blocks of 4096 bytes)\nx: 0 extents found\n')).toEqual([]);
  });

  it('says whether a range touches data, at the edges too', () => {
    const e: Array<[number, number]> = [
      [0, 10],
      [20, 30],
      [100, 200],
    ];
    expect(overlaps(e, 10, 20)).toBe(false);
    expect(overlaps(e, 9, 20)).toBe(true);
    expect(overlaps(e, 10, 21)).toBe(true);
    expect(overlaps(e, 30, 100)).toBe(false);
    expect(overlaps(e, 199, 300)).toBe(true);
    expect(overlaps(e, 200, 300)).toBe(false);
    expect(overlaps([], 0, 1)).toBe(false);
  });
});
