// kernels/tq_tables.h: the Lloyd-Max tables of the TQ3/TQ4 format (kernels/FORMAT.md, version 1).
//
// Generated once by kernels/tools/lloyd_max.py and then frozen: these fp32 values ARE the format.
// Changing any of them changes encoded bytes and requires a new format version. Centroids are in
// increasing order; thresholds[k] separates code k from code k+1, and a value exactly equal to a
// threshold takes the lower code.
#pragma once

namespace cachesvc::kernels::tq {

// d = 64, 3 bits: distortion E[(t - q(t))^2] = 0.033391
inline constexpr float kCentroidsD64B3[8] = {
    -2.11111212f,   // 0xc0071c76
    -1.32912207f,   // 0xbfaa20ac
    -0.750477672f,  // 0xbf401f4e
    -0.243681654f,  // 0xbe7987af
    0.243681654f,   // 0x3e7987af
    0.750477672f,   // 0x3f401f4e
    1.32912207f,    // 0x3faa20ac
    2.11111212f,    // 0x40071c76
};
inline constexpr float kThresholdsD64B3[7] = {
    -1.72011721f,  // 0xbfdc2ccd
    -1.03979993f,  // 0xbf85182a
    -0.49707967f,  // 0xbefe813a
    0.0f,          // 0x00000000
    0.49707967f,   // 0x3efe813a
    1.03979993f,   // 0x3f85182a
    1.72011721f,   // 0x3fdc2ccd
};
// d = 64, 4 bits: distortion E[(t - q(t))^2] = 0.009132
inline constexpr float kCentroidsD64B4[16] = {
    -2.64592099f,   // 0xc02956c5
    -2.02279854f,   // 0xc0017588
    -1.59031129f,   // 0xbfcb8f52
    -1.23887706f,   // 0xbf9e9386
    -0.931440473f,  // 0xbf6e72e2
    -0.650138855f,  // 0xbf266f80
    -0.384474337f,  // 0xbec4d9d2
    -0.127262652f,  // 0xbe025124
    0.127262652f,   // 0x3e025124
    0.384474337f,   // 0x3ec4d9d2
    0.650138855f,   // 0x3f266f80
    0.931440473f,   // 0x3f6e72e2
    1.23887706f,    // 0x3f9e9386
    1.59031129f,    // 0x3fcb8f52
    2.02279854f,    // 0x40017588
    2.64592099f,    // 0x402956c5
};
inline constexpr float kThresholdsD64B4[15] = {
    -2.33435965f,   // 0xc0156626
    -1.80655491f,   // 0xbfe73d31
    -1.41459417f,   // 0xbfb5116c
    -1.08515882f,   // 0xbf8ae67c
    -0.790789664f,  // 0xbf4a7131
    -0.517306626f,  // 0xbf046e35
    -0.255868495f,  // 0xbe830132
    0.0f,           // 0x00000000
    0.255868495f,   // 0x3e830132
    0.517306626f,   // 0x3f046e35
    0.790789664f,   // 0x3f4a7131
    1.08515882f,    // 0x3f8ae67c
    1.41459417f,    // 0x3fb5116c
    1.80655491f,    // 0x3fe73d31
    2.33435965f,    // 0x40156626
};
// d = 128, 3 bits: distortion E[(t - q(t))^2] = 0.033966
inline constexpr float kCentroidsD128B3[8] = {
    -2.1312747f,    // 0xc00866ce
    -1.33637345f,   // 0xbfab0e49
    -0.753146648f,  // 0xbf40ce38
    -0.244354188f,  // 0xbe7a37fc
    0.244354188f,   // 0x3e7a37fc
    0.753146648f,   // 0x3f40ce38
    1.33637345f,    // 0x3fab0e49
    2.1312747f,     // 0x400866ce
};
inline constexpr float kThresholdsD128B3[7] = {
    -1.73382401f,   // 0xbfddedf2
    -1.04475999f,   // 0xbf85bab2
    -0.498750418f,  // 0xbeff5c37
    0.0f,           // 0x00000000
    0.498750418f,   // 0x3eff5c37
    1.04475999f,    // 0x3f85bab2
    1.73382401f,    // 0x3fddedf2
};
// d = 128, 4 bits: distortion E[(t - q(t))^2] = 0.009315
inline constexpr float kCentroidsD128B4[16] = {
    -2.68823457f,   // 0xc02c0c09
    -2.04519057f,   // 0xc002e467
    -1.60357666f,   // 0xbfcd4200
    -1.24701405f,   // 0xbf9f9e28
    -0.936396658f,  // 0xbf6fb7b1
    -0.653048813f,  // 0xbf272e35
    -0.385996372f,  // 0xbec5a151
    -0.127731964f,  // 0xbe02cc2b
    0.127731964f,   // 0x3e02cc2b
    0.385996372f,   // 0x3ec5a151
    0.653048813f,   // 0x3f272e35
    0.936396658f,   // 0x3f6fb7b1
    1.24701405f,    // 0x3f9f9e28
    1.60357666f,    // 0x3fcd4200
    2.04519057f,    // 0x4002e467
    2.68823457f,    // 0x402c0c09
};
inline constexpr float kThresholdsD128B4[15] = {
    -2.36671257f,   // 0xc0177838
    -1.8243835f,    // 0xbfe98566
    -1.42529535f,   // 0xbfb67014
    -1.09170532f,   // 0xbf8bbd00
    -0.794722736f,  // 0xbf4b72f3
    -0.519522607f,  // 0xbf04ff6f
    -0.25686416f,   // 0xbe8383b3
    0.0f,           // 0x00000000
    0.25686416f,    // 0x3e8383b3
    0.519522607f,   // 0x3f04ff6f
    0.794722736f,   // 0x3f4b72f3
    1.09170532f,    // 0x3f8bbd00
    1.42529535f,    // 0x3fb67014
    1.8243835f,     // 0x3fe98566
    2.36671257f,    // 0x40177838
};
// d = 256, 3 bits: distortion E[(t - q(t))^2] = 0.034256
inline constexpr float kCentroidsD256B3[8] = {
    -2.14141655f,   // 0xc0090cf8
    -1.3400054f,    // 0xbfab854c
    -0.754477799f,  // 0xbf412575
    -0.244681418f,  // 0xbe7a8dc4
    0.244681418f,   // 0x3e7a8dc4
    0.754477799f,   // 0x3f412575
    1.3400054f,     // 0x3fab854c
    2.14141655f,    // 0x40090cf8
};
inline constexpr float kThresholdsD256B3[7] = {
    -1.74071097f,   // 0xbfdecf9e
    -1.04724157f,   // 0xbf860c03
    -0.499579608f,  // 0xbeffc8e6
    0.0f,           // 0x00000000
    0.499579608f,   // 0x3effc8e6
    1.04724157f,    // 0x3f860c03
    1.74071097f,    // 0x3fdecf9e
};
// d = 256, 4 bits: distortion E[(t - q(t))^2] = 0.009408
inline constexpr float kCentroidsD256B4[16] = {
    -2.70959091f,   // 0xc02d69f0
    -2.05631447f,   // 0xc0039aa8
    -1.61003506f,   // 0xbfce15a1
    -1.25087452f,   // 0xbfa01ca8
    -0.938704491f,  // 0xbf704ef0
    -0.654380918f,  // 0xbf278582
    -0.386691928f,  // 0xbec5fc7c
    -0.127953306f,  // 0xbe030631
    0.127953306f,   // 0x3e030631
    0.386691928f,   // 0x3ec5fc7c
    0.654380918f,   // 0x3f278582
    0.938704491f,   // 0x3f704ef0
    1.25087452f,    // 0x3fa01ca8
    1.61003506f,    // 0x3fce15a1
    2.05631447f,    // 0x40039aa8
    2.70959091f,    // 0x402d69f0
};
inline constexpr float kThresholdsD256B4[15] = {
    -2.38295269f,   // 0xc018824c
    -1.83317482f,   // 0xbfeaa579
    -1.43045485f,   // 0xbfb71925
    -1.09478951f,   // 0xbf8c2210
    -0.796542704f,  // 0xbf4bea39
    -0.520536423f,  // 0xbf0541e0
    -0.257322609f,  // 0xbe83bfca
    0.0f,           // 0x00000000
    0.257322609f,   // 0x3e83bfca
    0.520536423f,   // 0x3f0541e0
    0.796542704f,   // 0x3f4bea39
    1.09478951f,    // 0x3f8c2210
    1.43045485f,    // 0x3fb71925
    1.83317482f,    // 0x3feaa579
    2.38295269f,    // 0x4018824c
};

}  // namespace cachesvc::kernels::tq
